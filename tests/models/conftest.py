import torch

# Tiny models: one thread is fastest, and the machine's cores are shared (with two threads
# a step here took 300x longer under load).
torch.set_num_threads(1)

"""The fused path's weight list: kept between calls, rebuilt when a weight moves; and, on a CUDA
machine, cuDNN's kernel with the weights flattened once (tests marked ``cuda``, skipped
without a GPU, written to run unchanged on one)."""

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import recurrence

B, T, D, H = 3, 6, 4, 5
LENGTHS = torch.tensor([6, 2, 4])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _bigru():
    torch.manual_seed(0)
    return rnnkit.Bidirectional(rnnkit.GRU(D, H))


def _cells(bi):
    return [bi.forward_layer.cell, bi.backward_layer.cell]


def test_the_weight_list_is_kept_between_calls_and_sees_in_place_updates(pure_paths):
    bi, x = _bigru(), torch.randn(B, T, D)
    assert bi.path.forward.name == "fused" and bi.path.together
    first = recurrence._fused_weights(_cells(bi), x, bidirectional=True)
    assert recurrence._fused_weights(_cells(bi), x, bidirectional=True) is first
    out, _ = bi(x, lengths=LENGTHS)
    out.sum().backward()
    torch.optim.SGD(bi.parameters(), lr=1.0).step()  # in place: new versions, same storage
    assert recurrence._fused_weights(_cells(bi), x, bidirectional=True) is first
    assert first[0] is bi.forward_layer.cell.weight_ih  # the parameters themselves, not copies


def test_the_weight_list_is_rebuilt_when_a_weight_is_replaced(pure_paths):
    """load_state_dict(assign=True) puts new Parameters in the cells: a kept list would still
    hand the kernel the old ones."""
    bi, x = _bigru(), torch.randn(B, T, D)
    bi(x, lengths=LENGTHS)
    torch.manual_seed(1)
    other = rnnkit.Bidirectional(rnnkit.GRU(D, H))
    bi.load_state_dict(other.state_dict(), assign=True)
    torch.testing.assert_close(bi(x, lengths=LENGTHS)[0], other(x, lengths=LENGTHS)[0])


def test_the_weight_list_is_rebuilt_when_the_weights_move(pure_paths):
    """.double() gives the same Parameters new storage: the list is rebuilt (on CUDA, so that
    the new storage is flattened again) and the layer computes in float64."""
    bi, x = _bigru(), torch.randn(B, T, D)
    bi(x, lengths=LENGTHS)
    first = recurrence._fused_weights(_cells(bi), x, bidirectional=True)
    ref = bi.to_torch().double()
    bi.double()
    x64 = x.double()
    again = recurrence._fused_weights(_cells(bi), x64, bidirectional=True)
    assert again is not first and {w.dtype for w in again} == {torch.float64}
    out, _ = bi(x64, lengths=LENGTHS)
    packed = pack_padded_sequence(x64, LENGTHS, batch_first=True, enforce_sorted=False)
    want, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=T)
    torch.testing.assert_close(out, want)


# ------------------------------------------------------------------------------------- CUDA

@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_cuda_layers_take_cudnn_and_equal_the_cpu(kind):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    cpu = rnnkit.Stack(D, [H, H], cell=kind, bidirectional=True)
    gpu = rnnkit.Stack(D, [H, H], cell=kind, bidirectional=True)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    for path in gpu.paths:
        assert path.forward.name == "fused" and "cuDNN" in path.forward.reason
    x = torch.randn(B, T, D)
    want, _ = cpu(x, lengths=LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cuDNN's "not part of single contiguous chunk" warning
        for _ in range(2):
            out, _ = gpu(x.cuda(), lengths=LENGTHS.cuda())
            out.sum().backward()
    torch.testing.assert_close(out.cpu(), want, atol=1e-5, rtol=1e-4)


@cuda
@pytest.mark.cuda
def test_cuda_weights_are_flattened_once():
    bi = _bigru().cuda()
    x = torch.randn(B, T, D, device="cuda")
    bi(x)
    first = recurrence._fused_weights(_cells(bi), x, bidirectional=True)
    pointers = [w.data_ptr() for w in first]
    bi(x)
    assert recurrence._fused_weights(_cells(bi), x, bidirectional=True) is first
    assert [w.data_ptr() for w in first] == pointers  # no copy per call
    # one buffer: each weight starts where the previous one ends (cuDNN may align them)
    assert pointers == sorted(pointers) and pointers[-1] - pointers[0] < 4 * sum(w.numel() for w in first) * 2


@cuda
@pytest.mark.cuda
def test_trainer_device_auto_trains_on_the_gpu(tmp_path):
    from rnnkit.models import SequenceTagger
    from rnnkit.training import Trainer, TrainerConfig

    head = SequenceTagger(vocab_size=10, num_tags=3, embedding_dim=8,
                          encoder={"cell": "lstm", "hidden_sizes": [8], "bidirectional": True})
    batch = {"inputs": torch.randint(1, 10, (4, 5)), "lengths": torch.tensor([5, 3, 4, 2]),
             "labels": torch.randint(0, 3, (4, 5))}
    cfg = TrainerConfig(epochs=3, progress=False, plots=False, out_dir=str(tmp_path / "run"), precision="fp16")
    trainer = Trainer(head, cfg, train=[batch], dev=[batch])
    history = trainer.fit()
    assert trainer.device.type == "cuda" and next(head.parameters()).is_cuda
    assert history[-1]["train_loss"] < history[0]["train_loss"]

"""docs/benchmarks.md section 6, "more text": the plain-text file for a biLM pre-trained on
UD-EWT's training text plus English sentences of fra-eng (every 5th pair's English side: 33k
sentences of all lengths, as fra.txt is sorted by length), tokenised like UD (words,
punctuation and n't / 's apart), one sentence per line; and UD-EWT's dev text as its dev file.
Writes under runs/ only (the data sets stay in ../shared/datasets).

    python bench/bilm_more_text.py && rnnkit pretrain examples/bilm_ud.yaml \\
        --set data.format=text --set data.train=runs/bilm_text/ud_fra_en.txt \\
        --set data.dev=runs/bilm_text/ud_dev.txt --out runs/bilm_ud_fra
"""

import re
from pathlib import Path

from rnnkit.data import read_conllu

DATA = Path("../shared/datasets")
OUT = Path("runs/bilm_text")
TOKEN = re.compile(r"\w+(?=n't)|n't|'\w+|\w+|[^\w\s]")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ud = [" ".join(ex.tokens) for ex in read_conllu(DATA / "ud_en_ewt/en_ewt-ud-train.conllu")]
    english = [" ".join(TOKEN.findall(line.split("\t")[0]))
               for n, line in enumerate((DATA / "fra_eng/fra.txt").read_text(encoding="utf-8").splitlines())
               if n % 5 == 0 and line.strip()]
    (OUT / "ud_fra_en.txt").write_text("\n".join(ud + english) + "\n", encoding="utf-8")
    dev = [" ".join(ex.tokens) for ex in read_conllu(DATA / "ud_en_ewt/en_ewt-ud-dev.conllu")]
    (OUT / "ud_dev.txt").write_text("\n".join(dev) + "\n", encoding="utf-8")
    print(f"{len(ud):,} UD + {len(english):,} fra-eng English sentences -> {OUT / 'ud_fra_en.txt'}")


if __name__ == "__main__":
    main()

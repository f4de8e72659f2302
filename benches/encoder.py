"""The Python baseline of benches/encoder.rs: BGE-M3 encoding of a text file with onnxruntime,
tokenizers and numpy, written the way FlagEmbedding's BGEM3FlagModel.encode does it.

Tokenize with truncation to max_length, sort by length (longest first), run batches padded to
their longest text, then per batch: dense = normalize(h[:, 0]); sparse = relu(h @ Ws.T + bs),
one {id: weight} dict per text with the special tokens skipped and the largest weight of a
repeated id kept; colbert = normalize((h[:, 1:] @ Wc.T + bc) * mask[:, 1:]), cut to the text's
n - 1 rows. The model directory is the m3-heads layout (model.onnx with last_hidden_state,
sparse_linear.safetensors, colbert_linear.safetensors). Prints one JSON line.

Usage: python benches/encoder.py --model DIR --texts FILE [--batch 16] [--threads 2]
       [--max-length 512] [--repeat 3]
(scripts/bench-encoder.sh runs it beside the Rust side with the same settings.)
"""
import argparse
import json
import pathlib
import struct
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

NORM_EPS = 1e-12  # torch.nn.functional.normalize
WARMUP_TEXTS = 64


def read_linear(path):
    """weight [out, in] and bias [out] of an F32 safetensors file (torch Linear layout)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
    t = {k.rsplit(".", 1)[-1]: np.frombuffer(body[v["data_offsets"][0]:v["data_offsets"][1]], "<f4")
         .reshape(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return t["weight"], t["bias"]


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


class M3:
    def __init__(self, model_dir, threads, max_length):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.special = {self.tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<unk>")}
        self.pad = self.tokenizer.token_to_id("<pad>")
        self.sparse_w, self.sparse_b = read_linear(model_dir / "sparse_linear.safetensors")
        self.colbert_w, self.colbert_b = read_linear(model_dir / "colbert_linear.safetensors")

    def encode(self, texts, batch_size):
        """[(dense, sparse dict, colbert rows, tokens)] in text order."""
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [None] * len(ids)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            lens = [len(ids[i]) for i in rows]
            input_ids = np.full((len(rows), max(lens)), self.pad, dtype=np.int64)
            mask = np.zeros_like(input_ids)
            for r, i in enumerate(rows):
                input_ids[r, :lens[r]], mask[r, :lens[r]] = ids[i], 1
            (h,) = self.session.run(["last_hidden_state"], {"input_ids": input_ids, "attention_mask": mask})
            dense = normalize(h[:, 0])
            weights = np.maximum(h @ self.sparse_w.T + self.sparse_b, 0)[:, :, 0]
            colbert = normalize((h[:, 1:] @ self.colbert_w.T + self.colbert_b) * mask[:, 1:, None])
            for r, i in enumerate(rows):
                out[i] = (dense[r], self.sparse(input_ids[r, :lens[r]], weights[r, :lens[r]]),
                          colbert[r, :lens[r] - 1], lens[r])
        return out

    def sparse(self, ids, weights):
        result = {}
        for tid, w in zip(ids.tolist(), weights.tolist()):
            if tid in self.special or w <= 0:
                continue
            if w > result.get(tid, 0):
                result[tid] = w
        return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=pathlib.Path, required=True, help="an m3-heads model directory")
    ap.add_argument("--texts", type=pathlib.Path, required=True, help="one text per line")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    args = ap.parse_args()
    texts = args.texts.read_text(encoding="utf-8").splitlines()
    m3 = M3(args.model, args.threads, args.max_length)
    m3.encode(texts[:WARMUP_TEXTS], args.batch)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = m3.encode(texts, args.batch)
        best = min(best, time.perf_counter() - start)
    tokens = sum(o[3] for o in out)
    print(json.dumps({"impl": "python", "texts": len(texts), "tokens": tokens, "seconds": round(best, 4),
                      "tokens_per_s": round(tokens / best, 1),
                      "sparse_terms": sum(len(o[1]) for o in out),
                      "colbert_rows": sum(len(o[2]) for o in out)}))


if __name__ == "__main__":
    main()

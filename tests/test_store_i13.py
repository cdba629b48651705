"""The state slots of `results.store`: how an attack keeps a resumable state without touching files itself."""

from __future__ import annotations

import json

import pytest
import torch

from robustbench_lr.results.store import FileStore, MemoryStore


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_slot_round_trips_its_document_and_shards_as_copies(kind, tmp_path):
    store = FileStore(tmp_path / "state") if kind == "file" else MemoryStore()
    slot = store.slot("aa__m__autoattack-linf__eps0.1")
    assert slot.read() is None and (kind == "memory" or not (tmp_path / "state").exists())  # nothing written yet
    doc = {"format": "x/1", "robust": [True, False], "shards": 1}
    t = {"idx": torch.tensor([1, 3]), "x_adv": torch.rand(2, 1, 4, 4)}
    slot.write_shard(0, t)
    slot.write(doc)
    doc["robust"][0] = False
    t["x_adv"].zero_()  # later changes by the caller do not reach what was saved
    back, shard = slot.read(), slot.read_shard(0)
    assert back == {"format": "x/1", "robust": [True, False], "shards": 1}
    assert torch.equal(shard["idx"], torch.tensor([1, 3])) and shard["x_adv"].abs().sum() > 0
    again = store.slot("aa__m__autoattack-linf__eps0.1")  # the same key finds the same state (a resumed run)
    assert again.read() == back and "aa__m__autoattack-linf__eps0.1" in again.where
    if kind == "file":
        assert json.loads((tmp_path / "state" / "aa__m__autoattack-linf__eps0.1.json").read_text()) == back
        assert (tmp_path / "state" / "aa__m__autoattack-linf__eps0.1.json.adv" / "shard-00000.safetensors").is_file()


def test_an_unreadable_file_slot_starts_again(tmp_path, caplog):
    (tmp_path / "s.json").write_text("{not json")
    assert FileStore(tmp_path).slot("s").read() is None
    assert any("unreadable attack state" in r.getMessage() for r in caplog.records)

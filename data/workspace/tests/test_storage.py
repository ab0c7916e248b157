from tally import storage


def test_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "SNAPSHOT_DIR", tmp_path)
    storage.save_snapshot([], "empty")
    assert storage.load_snapshot("empty") == []

"""The worker's RocksDB store (streams/store.py) as faust opens it, without a broker."""
from pathlib import Path

import faust
import rocksdict

from mqstream.streams.store import SCHEME

VALUE = bytes(19_000)  # as compressible as a value can be


def store(datadir: Path):
    app = faust.App("store", broker="kafka://127.0.0.1:1", store=f"{SCHEME}://", datadir=str(datadir))
    return app.Table("item-models", partitions=1).data


def test_blocks_are_written_uncompressed(tmp_path):
    data = store(tmp_path)
    for i in range(200):
        data.put_in(0, f"I{i:04d}".encode(), VALUE)
    db = data._db_for_partition(0)
    db.flush()
    written = sum(f.stat().st_size for f in Path(data.partition_path(0)).glob("*.sst"))
    assert written >= 200 * len(VALUE)  # Snappy, RocksDB's default, writes these 3.8 MB in 187 kB


def test_a_database_written_compressed_is_read(tmp_path):
    path = store(tmp_path).partition_path(0)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    earlier = rocksdict.Rdict(str(path), options=options)  # RocksDB's defaults: Snappy
    earlier.put(b"I0001", VALUE)
    earlier.flush()
    earlier.close()
    assert store(tmp_path).get_in(0, b"I0001") == VALUE

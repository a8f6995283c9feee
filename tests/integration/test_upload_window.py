"""The start's uploads hand only a few files at a time to their threads (`pipeline.uploads`):
waiting on every file of a big batch at once cost each wait time in proportion to the files
left, quadratic in all. On moto's S3 server."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pipeline.remote import make_s3_client
from pipeline.settings import StorageSettings
from pipeline.storage import Storage
from pipeline.uploads import AHEAD, LocalFile, upload_files

FILES = 60


class CountingPool(ThreadPoolExecutor):
    """Upload threads that count the files handed to them and not yet done."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers)
        self.outstanding = 0
        self.most = 0
        self._count = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count:
            self.outstanding += 1
            self.most = max(self.most, self.outstanding)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self._count:
            self.outstanding -= 1


def test_a_big_start_hands_its_files_over_a_few_at_a_time(s3_server, bucket, tmp_path):
    settings = StorageSettings(bucket=bucket, endpoint_url=s3_server.url)
    storage = Storage(make_s3_client(endpoint_url=s3_server.url, region=settings.region), settings)
    storage.ensure_bucket()
    files = {}
    for n in range(FILES):
        path = tmp_path / f"clip-{n:02d}.wav"
        path.write_bytes(f"audio {n}".encode() * 100)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        files[f"media/{sha}.wav"] = LocalFile(path, f"media/{sha}.wav", sha, path.stat().st_size)
    pools: list[CountingPool] = []

    def counting(workers: int) -> CountingPool:
        pools.append(CountingPool(workers))
        return pools[-1]

    told: list[tuple[str, object]] = []
    # When 60 files go up two at a time
    sent = upload_files(
        files,
        storage,
        files_at_once=2,
        on_file=lambda key, error: told.append((key, error)),
        executor=counting,
    )
    # Then every file went up once, each told once, without error
    assert (sent.files, sent.uploaded, sent.refused) == (FILES, FILES, 0)
    assert sorted(key for key, _ in told) == sorted(files) and not any(e for _, e in told)
    # And never more than a few were handed to the threads ahead of time
    [pool] = pools
    assert pool.most <= 2 + AHEAD
    # And a second start sends nothing
    again = upload_files(files, storage, files_at_once=2, executor=counting)
    assert (again.uploaded, again.present) == (0, FILES)

"""The API key is sent to the server and written nowhere: not in any output, cache, log line or error
message, on the failure paths as much as on a clean run (401, an exhausted quota, ``pairs``, ``classify``,
a ``--cache`` kept outside the output folder)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PLANTED_KEY, fake_compare, fruit_files, run_cli
from tests.fake_openai import FakeOpenAI, ServerThread


def assert_key_nowhere(root: Path, result) -> None:
    """No file under ``root`` (outputs, caches with their -wal/-shm files, inputs) and neither stream
    holds the key, nor its bare secret part."""
    secret = PLANTED_KEY.removeprefix("sk-").encode()
    files = [path for path in root.rglob("*") if path.is_file()]
    assert files, "nothing was written: the check would prove nothing"
    for path in files:
        assert secret not in path.read_bytes(), path
    assert secret.decode() not in result.stdout + result.stderr


def assert_key_was_sent(fake: FakeOpenAI) -> None:
    assert f"Bearer {PLANTED_KEY}" in fake.auth


class Unauthorised(FakeOpenAI):
    async def chat(self, request):
        self.count += 1
        self.auth.add(request.headers.get("Authorization", ""))
        return self.error(
            401, "Incorrect API key provided: sk-test-***.", "invalid_request_error", "invalid_api_key"
        )


def test_a_refused_key_is_not_written(tmp_path):
    a, b = fruit_files(tmp_path, 8)
    fake = Unauthorised()
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, tmp_path / "out"), "--quiet")
    assert result.returncode == 1 and "not authorised" in result.stderr
    assert (tmp_path / "out" / "run.json").is_file()
    assert_key_was_sent(fake)
    assert_key_nowhere(tmp_path, result)


def test_a_quota_stop_does_not_write_the_key(tmp_path):
    a, b = fruit_files(tmp_path, 8)
    fake = FakeOpenAI(fault=lambda number, body: "quota" if number >= 3 else None)
    with ServerThread(fake) as server:
        result = run_cli(*fake_compare(server, a, b, tmp_path / "out"), "--batch-size", "4", "--quiet")
    assert result.returncode == 1 and "quota exhausted" in result.stderr
    assert (tmp_path / "out" / "run.json").is_file()
    assert_key_was_sent(fake)
    assert_key_nowhere(tmp_path, result)


def test_pairs_do_not_write_the_key(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    fruit_files(folder, 8)
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        result = run_cli(
            "pairs", folder, "--base-url", server.base_url, "--model", "fake-model",
            "--output", tmp_path / "pairs", "--batch-size", "4", "--max-steps", "1", "--quiet",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pairs" / "pairs.json").is_file()
    assert_key_was_sent(fake)
    assert_key_nowhere(tmp_path, result)


def test_classify_does_not_write_the_key(tmp_path):
    a, b = fruit_files(tmp_path, 8)
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        compare = run_cli(*fake_compare(server, a, b, tmp_path / "out"), "--max-steps", "1", "--quiet")
        assert compare.returncode == 0, compare.stderr
        fake.auth.clear()
        result = run_cli(
            "classify", tmp_path / "out" / "classify.yaml", a, "--output", tmp_path / "reuse",
            "--base-url", server.base_url, "--quiet",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reuse" / "predictions.parquet").is_file()
    assert_key_was_sent(fake)
    assert_key_nowhere(tmp_path, result)


def test_a_cache_outside_the_output_folder_does_not_hold_the_key(tmp_path):
    a, b = fruit_files(tmp_path, 8)
    cache = tmp_path / "elsewhere" / "shared.sqlite"
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        result = run_cli(
            *fake_compare(server, a, b, tmp_path / "out"), "--cache", cache, "--max-steps", "1", "--quiet"
        )
    assert result.returncode == 0, result.stderr
    assert cache.is_file()
    assert_key_was_sent(fake)
    assert_key_nowhere(tmp_path / "elsewhere", result)
    assert_key_nowhere(tmp_path, result)

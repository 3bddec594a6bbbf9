"""crjepa.hub.access: one error type and one credentials check for every push (crjepa push, the training run's
uploads, python -m datasets_scripts --push-to-hub)."""

from __future__ import annotations

import pytest

from crjepa.hub.access import HubError, check_hub_access, prepare_push, push_folder

from helpers import FakeHubApi


class RefusingHub:
    """A Hub client whose token is refused."""

    token = "hf_refused"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def whoami(self, token=None):
        self.calls.append("whoami")
        raise PermissionError("401 Client Error: Unauthorized\nmore detail")

    def create_repo(self, *args, **kwargs):
        self.calls.append("create_repo")

    def upload_folder(self, **kwargs):
        self.calls.append("upload_folder")


def test_every_push_path_fails_the_same_way_before_writing(tmp_path):
    from datasets_scripts import synthetic
    from datasets_scripts.common import PublishError, export_builder

    assert PublishError is HubError
    messages = []
    for push in (
        lambda api: push_folder(tmp_path, "me/repo", api=api),
        lambda api: prepare_push("me/repo", repo_type="model", api=api),
        lambda api: export_builder(
            synthetic.SyntheticPairs(
                cache_dir=str(tmp_path / "cache"), num_train=2, num_validation=0, num_test=0, image_size=8
            ),
            tmp_path / "out",
            push_to_hub="me/repo",
            api=api,
            num_proc=1,
        ),
    ):
        api = RefusingHub()
        with pytest.raises(HubError) as err:
            push(api)
        assert api.calls == ["whoami"]  # nothing created or uploaded
        assert err.value.__cause__ is None and err.value.__suppress_context__
        messages.append(str(err.value))
    assert len(set(messages)) == 1, messages
    assert "me/repo" in messages[0] and "PermissionError: 401" in messages[0] and "hf auth login" in messages[0]
    assert "\n" not in messages[0] and not (tmp_path / "out").exists()


def test_upload_failure_is_one_sentence():
    class FailingUpload(RefusingHub):
        def whoami(self, token=None):
            return {"name": "me"}

        def upload_folder(self, **kwargs):
            raise ConnectionError("connection reset\ntrace")

    with pytest.raises(HubError, match=r"Cannot push to me/repo: upload failed \(ConnectionError: connection reset\)"):
        push_folder(".", "me/repo", api=FailingUpload())


def test_an_unreachable_hub_is_not_reported_as_a_refused_token():
    """No network: the check says the Hub could not be reached (it used to say the token was not accepted)."""

    class ConnectError(Exception):  # httpx's name for a failed connection (matched by name, httpx not imported)
        pass

    class Offline(RefusingHub):
        def whoami(self, token=None):
            try:
                raise OSError(-2, "Name or service not known")
            except OSError as cause:
                raise ConnectError("[Errno -2] Name or service not known") from cause

    with pytest.raises(HubError) as err:
        prepare_push("me/repo", api=Offline())
    message = str(err.value)
    assert "could not be reached (ConnectError: [Errno -2] Name or service not known)" in message
    assert "did not accept the token" not in message and "\n" not in message
    with pytest.raises(HubError, match="did not accept the token"):  # a refusal stays a refusal
        prepare_push("me/repo", api=RefusingHub())


def test_push_goes_through_the_injected_client(archive_dir):
    api = FakeHubApi()
    url = push_folder(archive_dir, "someone/emb", repo_type="dataset", api=api, private=True)
    assert url == "https://huggingface.co/datasets/someone/emb"
    names = [c[0] for c in api.calls]
    assert names == ["whoami", "create_repo", "upload_folder"]
    _, repo_id, create = api.calls[1]
    assert repo_id == "someone/emb" and create["repo_type"] == "dataset" and create["exist_ok"] is True
    assert create["private"] is True
    upload = api.calls[2][1]
    assert upload["folder_path"] == str(archive_dir) and upload["repo_type"] == "dataset"
    assert upload["repo_id"] == "someone/emb" and upload["commit_message"]
    assert (archive_dir / ".crjepa-output.json").is_file() and ".crjepa-output.json" in upload["ignore_patterns"]


def test_hub_access_failures_are_one_clear_sentence(monkeypatch, tmp_path):
    with pytest.raises(HubError, match="no Hugging Face token") as err:
        check_hub_access("someone/emb", api=FakeHubApi(token=None))
    assert "\n" not in str(err.value)
    with pytest.raises(HubError, match="could not be reached .*ConnectionError") as err:  # not "token refused"
        push_folder(tmp_path, "someone/emb", api=FakeHubApi(fail_whoami=True))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        check_hub_access("someone/emb")
    with pytest.raises(HubError, match="user-or-org/name"):
        check_hub_access("not-a-repo-id")

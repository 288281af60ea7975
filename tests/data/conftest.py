import pytest

from detector.config import load_config

SMALL_SHAPES = ["dataset.num_train=24", "dataset.num_test=8", "dataloader.num_workers=0", "dataloader.batch_size=4"]
# Small training sizes keep decoding + resizing cheap on two cores.
SMALL_AUG = ["aug.min_size=[160,192]", "aug.max_size=256", "dataloader.num_workers=0",
             "dataloader.batch_size=4"]


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """Folder of a small generated shapes dataset (generated on first use, once per session)."""
    return tmp_path_factory.mktemp("shapes") / "shapes"


@pytest.fixture
def shapes_cfg(shapes_root):
    return lambda *overrides: load_config([f"dataset.root={shapes_root}", *SMALL_SHAPES, *overrides])


@pytest.fixture
def coco128_cfg(coco128):
    return lambda *overrides: load_config(["dataset=coco128", *SMALL_AUG, *overrides])


@pytest.fixture
def bccd_cfg(bccd):
    return lambda *overrides: load_config(["dataset=bccd", *SMALL_AUG, *overrides])

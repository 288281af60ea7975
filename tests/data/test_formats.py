"""Dataset formats as plug-ins: each conf/dataset option names its format class, which
knows its own keys, checks them before work and names the key in every error."""
import pytest

from detector.config import ComponentArgumentError, load_config
from detector.data.coco_format import CocoFormat, ShapesFormat
from detector.data.coco_index import DatasetError
from detector.data.formats import build_format
from detector.data.voc import VocFormat


@pytest.mark.parametrize("dataset,cls", [
    ("shapes", ShapesFormat), ("coco128", CocoFormat), ("coco2017", CocoFormat), ("coco_format", CocoFormat),
    ("voc", VocFormat), ("bccd", VocFormat),
])
def test_every_dataset_option_names_its_format_class(dataset, cls):
    fmt = build_format(load_config([f"dataset={dataset}"]))   # reads no data
    assert type(fmt) is cls and fmt.name == dataset
    assert fmt.filter_empty is True and fmt.on_bad_sample == "skip" and fmt.max_image_pixels == 89478485


def test_the_format_checks_its_own_keys_before_work(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset\.train\.images is not set: dataset=coco_format needs it"):
        build_format(load_config(["dataset=coco_format"])).check(["train", "test"])
    # Evaluation alone needs only the test split.
    cfg = load_config(["dataset=coco_format", f"dataset.test.images={tmp_path}", f"dataset.test.annotations={tmp_path}"])
    build_format(cfg).check(["test"])
    with pytest.raises(DatasetError, match=r"dataset\.root is not set: dataset=voc needs it"):
        build_format(load_config(["dataset=voc"])).check(["test"])
    with pytest.raises(DatasetError, match=r"dataset\.root=.*nowhere does not exist\. Expected a Pascal VOC folder"):
        build_format(load_config(["dataset=voc", f"dataset.root={tmp_path / 'nowhere'}"])).check(["test"])
    with pytest.raises(DatasetError, match=r"dataset\.object_size=\[16.0, 400.0\]"):
        build_format(load_config(["dataset.object_size=[16,400]"])).check(["train"])   # shapes: its generator


def test_unknown_or_wrong_targets_and_keys_are_named():
    with pytest.raises(ComponentArgumentError, match=r"dataset: detector\.data\.voc\.VocFormat does not take .*use_dificult"):
        build_format(load_config(["dataset=voc", "+dataset.use_dificult=true"]))
    with pytest.raises(DatasetError, match=r"dataset\._target_=collections\.OrderedDict: made a OrderedDict, not a "
                                           r"detector\.data\.formats\.DatasetFormat"):
        build_format(load_config(["dataset=coco_format", "dataset._target_=collections.OrderedDict"]))
    with pytest.raises(DatasetError, match=r"dataset\.on_bad_sample='ignore': expected one of \('skip', 'error'\)"):
        build_format(load_config(["dataset.on_bad_sample=ignore"]))
    with pytest.raises(DatasetError, match=r"dataset=shapes: the dataset config has no _target_"):
        build_format(load_config(["~dataset._target_"]))

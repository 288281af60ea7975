"""schedule=auto: the recipe's choices from synthetic training-split figures (tiny objects on
large photos, large objects on small photos, elongated boxes, crowded images), overrides that
win, a model without some of the keys, and load_config + build_model giving the run's model."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from detector import build_model, load_config
from detector.recipe.apply import apply_recipe, is_marked, mark_recipe_keys
from detector.recipe.choices import RecipeContext, choose
from detector.recipe.statistics import split_statistics
from reliability_helpers import tiny  # on pytest.ini's pythonpath

SETTINGS = OmegaConf.to_container(load_config(["schedule=auto"]).recipe, resolve=True)
SCRATCH = RecipeContext(levels=5, backbone_weights=False, model_weights=False)


def records(image_size, box_sizes, boxes_per_image=1, images=40, labels=(1,)):
    """`images` records of `image_size` (w, h), each with `boxes_per_image` boxes cycling through
    `box_sizes` ((w, h) pairs) and `labels`."""
    out, k = [], 0
    for _ in range(images):
        boxes, classes = [], []
        for _ in range(boxes_per_image):
            w, h = box_sizes[k % len(box_sizes)]
            boxes.append([5, 5, 5 + w, 5 + h])
            classes.append(labels[k % len(labels)])
            k += 1
        out.append(SimpleNamespace(width=image_size[0], height=image_size[1], boxes=np.array(boxes, float),
                                   labels=np.array(classes)))
    return out


def chosen(stats, ctx=SCRATCH, settings=SETTINGS):
    return {c.key: c for c in choose(stats, settings, ctx)}


def test_tiny_objects_on_large_photos_get_the_largest_input_and_the_smallest_anchor_with_a_warning():
    stats = split_statistics(records((4000, 3000), [(20, 20), (30, 24)]))
    c = chosen(stats)
    assert c["model.input.min_size_test"].value == SETTINGS["max_input_size"] == 800   # bounded by the cost cap
    assert c["model.input.min_size_test"].warning                 # 20 px at 3000 -> 5 px at 800: below 16
    assert "stay below 16 px" in c["model.input.min_size_test"].reason
    assert c["model.input.max_size_test"].value == 1088           # 800 x 4/3, to a multiple of 32
    assert c["model.anchor_generator.sizes"].value[0] == 16
    assert c["aug.min_size"].value == [736, 800, 864]               # +/- 10%, to multiples of 32


def test_objects_big_enough_need_no_larger_input_than_they_need():
    # 40 px objects on 2000 x 1500 photos: 16 px wanted -> 600 px, not the photos' own 1500.
    stats = split_statistics(records((2000, 1500), [(40, 40)]))
    c = chosen(stats)
    assert c["model.input.min_size_test"].value == 608           # 16 / (40 / 1500) = 600, to a multiple of 32
    assert not c["model.input.min_size_test"].warning


def test_large_objects_on_small_photos_keep_a_small_input_and_no_anchor_beyond_the_objects():
    stats = split_statistics(records((320, 240), [(200, 180), (220, 200), (150, 160)]))
    c = chosen(stats)
    size = c["model.input.min_size_test"].value
    assert size == 320                                            # the floor; the photos are 240: at most 2x
    sizes = c["model.anchor_generator.sizes"].value
    largest_box = np.sqrt(220 * 200) / 240 * size
    assert sizes[-1] <= 1.3 * largest_box < 512                   # no level for objects bigger than any
    assert sizes[0] == SETTINGS["max_first_anchor"] == 64         # nothing small to find
    assert sizes == sorted(sizes) and len(sizes) == 5


def test_elongated_boxes_add_aspect_ratios_and_square_ones_do_not():
    tall_and_wide = split_statistics(records((640, 480), [(20, 100), (100, 20), (40, 40)]))
    assert chosen(tall_and_wide)["model.anchor_generator.aspect_ratios"].value == [0.2, 0.5, 1.0, 2.0, 5.0]
    square = split_statistics(records((640, 480), [(40, 40), (50, 45)]))
    assert chosen(square)["model.anchor_generator.aspect_ratios"].value == [0.5, 1.0, 2.0]


def test_many_objects_per_image_raise_the_samples_proposals_and_detections():
    crowded = chosen(split_statistics(records((640, 480), [(20, 20)], boxes_per_image=200, images=5)))
    assert crowded["model.roi_heads.batch_size_per_image"].value == 512
    assert crowded["model.rpn.batch_size_per_image"].value == 256
    assert crowded["model.rpn.post_nms_topk_train"].value == 2000
    assert crowded["model.roi_heads.detections_per_img"].value == 300
    sparse = chosen(split_statistics(records((640, 480), [(200, 200)], boxes_per_image=2)))
    assert sparse["model.roi_heads.batch_size_per_image"].value == 64
    assert sparse["model.rpn.batch_size_per_image"].value == 128
    assert sparse["model.rpn.post_nms_topk_train"].value == 300
    assert sparse["model.roi_heads.detections_per_img"].value == 100


def test_starting_weights_choose_sgd_and_a_detector_keeps_its_anchors_and_widths():
    stats = split_statistics(records((640, 480), [(60, 60)]))
    scratch = chosen(stats)
    assert scratch["solver.optimizer"].value == "adamw" and "model.fpn.out_channels" in scratch
    backbone = chosen(stats, RecipeContext(5, backbone_weights=True, model_weights=False))
    assert backbone["solver.optimizer"].value == "sgd" and backbone["solver.base_lr"].value == 0.02
    detector = chosen(stats, RecipeContext(5, backbone_weights=False, model_weights=True))
    assert detector["solver.optimizer"].value == "sgd"
    assert "model.anchor_generator.sizes" not in detector and "model.fpn.out_channels" not in detector


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("recipe") / "shapes"


def test_overrides_win_and_load_config_builds_the_models_of_the_run(shapes_root, tmp_path):
    args = [a for a in tiny(shapes_root, tmp_path, "schedule=auto")
            if not a.startswith(("model.input", "aug.min_size", "aug.max_size"))]
    cfg = load_config([*args, "model.input.min_size_test=160"])
    assert not is_marked(cfg, "model.input.min_size_test") and is_marked(cfg, "model.input.max_size_test")
    assert not is_marked(cfg, "model.fpn.out_channels")                       # given by tiny()
    model = build_model(cfg)                                                  # reads the data through the marks
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["input"]["min_size_test"] == 160                 # the override
    assert resolved["model"]["fpn"]["out_channels"] == 32
    assert model.preprocessor.min_size_test == 160
    assert model.preprocessor.max_size_test == resolved["model"]["input"]["max_size_test"] != 96
    sizes = resolved["model"]["anchor_generator"]["sizes"]
    assert model.rpn.anchor_generator.sizes == sizes != [32, 64, 128, 256, 512]

    # The training run's path: the same values, now plain (what config.yaml records), each logged.
    applied = apply_recipe(cfg, logging.getLogger("test"))
    assert {c.key for c in applied} >= {"model.anchor_generator.sizes", "solver.optimizer", "aug.min_size"}
    assert "model.input.min_size_test" not in {c.key for c in applied}
    assert OmegaConf.to_container(cfg, resolve=False)["model"]["anchor_generator"]["sizes"] == sizes
    assert OmegaConf.to_container(cfg, resolve=True) == resolved


def test_keys_the_model_lacks_are_not_added():
    cfg = load_config(["schedule=auto", "dataset=coco128"])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))     # unmark
    for key in ("model.rpn.batch_size_per_image", "model.fpn.out_channels"):
        parent, _, leaf = key.rpartition(".")
        OmegaConf.select(cfg, parent)[leaf] = 1
    del cfg.model["rpn"]
    cfg.recipe.levels = None
    marked = mark_recipe_keys(cfg, set())
    assert "rpn" not in cfg.model and not any(k.startswith("model.rpn") for k in marked)
    assert "model.fpn.out_channels" in marked and "model.anchor_generator.sizes" in marked

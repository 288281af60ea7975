"""COCO's person keypoints: their names and skeleton, as COCO's person_keypoints files list them.

A leaf module (no imports): converted person models (torchvision's and Detectron2's Keypoint
R-CNN) record them so that their predictions can be drawn with the skeleton, whatever data they
are later run on.
"""

COCO_PERSON_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# 1-based pairs of COCO's person category "skeleton".
COCO_PERSON_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

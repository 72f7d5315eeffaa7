"""A small converted detection dataset: VOC-layout scenes from the bundled photos, as ŷ."""

from pipeline.convert import ConvertJob, ConvertOptions, convert_dataset
from pipeline.images import ImagePolicy
from pipeline.tasks.scenes import SceneTask, make_scene_task


def scenes_dataset(root, train=4, val=2):
    """``train`` + ``val`` 128-px scenes of up to two large objects, converted at their size."""
    make_scene_task(root / "voc", SceneTask(train=train, val=val, size=128, max_objects=2, min_side=40,
                                            max_side=70, truncate_p=0, empty_p=0, difficult_below=0))
    convert_dataset(ConvertJob(str(root / "voc"), str(root / "ds"),
                               options=ConvertOptions(ImagePolicy(size=0), shard_size=4)))
    return root / "ds"




def small_scenes(root):
    """Six 64-px VOC-layout scenes of up to two objects (4 train, 2 val), not converted."""
    make_scene_task(root, SceneTask(train=4, val=2, size=64, max_objects=2, min_side=24, max_side=40,
                                    truncate_p=0, empty_p=0, difficult_below=0))
    return root

"""Codec training: rate–distortion (and Eq. 6's rate–distortion–utility) training, the task
heads on ŷ, training crops from any source, and integerisation of ``h_s``.

It may import the runtime codec (`pipeline.codec`), sources, images, tasks, models and the
task models' inputs (`pipeline.train`: detection windows with their boxes); the runtime codec
never imports it back.
"""

"""latent-shards library: image datasets into latent shards, and vision models trained on ŷ.

No Ray in here (jobs/ wires the library to Ray and the command line). Its parts stand on
floors, each importing only lower ones (tests/test_layering.py): storage, names, errors;
codec; sources, models, shards; images; tasks, convert, loader; codec_train, train; eval.
"""

__version__ = "0.1.0"

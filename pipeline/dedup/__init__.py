"""The dedup stage (see `sept.pipeline.dedup.stage`)."""
from sept.pipeline.dedup.stage import *  # noqa: F401,F403
from sept.pipeline.dedup.stage import _Rules, _cosines, _cross_class, _load_lexicon, _tokens  # noqa: F401

"""Data for fpjax: sources (arrays, image folders, TFDS), input pipeline, embedded real data, and
the bad-input list (skipped user files)."""
from fpjax.data.bad_inputs import BadInputs
from fpjax.data.bad_inputs import read_bad_inputs
from fpjax.data.pipeline import make_pipeline
from fpjax.data.pipeline import Pipeline
from fpjax.data.real import load_real
from fpjax.data.real import NAMES as REAL_NAMES
from fpjax.data.real import RealData
from fpjax.data.sources import ArraySource
from fpjax.data.sources import ImageFolderSource
from fpjax.data.sources import ImageSet
from fpjax.data.sources import load_image_folder
from fpjax.data.sources import load_tfds
from fpjax.data.sources import save_image_folder
from fpjax.data.sources import TfdsSource

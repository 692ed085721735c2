"""Stores in a work directory: the artifact store (the one hand-off from computing to analysing)."""
from fpjax.store.artifact_store import (BAD_LABEL, COMPLETE, FORMAT, ArtifactStore,
                                        ArtifactWriter, LazyRows, artifact_field, is_complete,
                                        stats_path, write_index)

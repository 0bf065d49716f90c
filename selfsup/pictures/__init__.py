"""The pictures an SSL researcher checks first, written by every training run to <run dir>/images/
(`images=true`, the default; `images=false` writes none), each path printed and, with a WandbLogger
attached, logged as a W&B image:

* views.png, at the first training step: a few images as the method receives them, one row per
  view, after the on-device augmentation (on_after_batch_transfer), de-normalised: are my views sensible?
* neighbours.png, at the end: validation queries and their nearest training images by the final
  evaluation's features (cosine similarity, as the kNN classifier), framed green where the neighbour
  has the query's class and red where not: do neighbours in feature space look alike?
* embedding.png, at the end: the validation features in 2-D (PCA to 50 dimensions, then t-SNE),
  coloured by class: do the classes separate?
* curves.png, at the end: training loss, kNN top-1 and learning rate over steps, from csv/metrics.csv.

One module per kind of picture, drawn from tensors and files alone: `grids.py` (views.png and
neighbours.png, cells of images), `embedding.py`, `curves.py`; `publish.py` is what the run layer
attaches: when each is drawn, where it is written, and how it reaches W&B.
Drawing uses matplotlib's object API (no pyplot state, no display needed)."""

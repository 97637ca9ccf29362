"""Per-member map stats on good training images, for TM (raw comps) and RB (maps)."""

import sys
from pathlib import Path

import numpy as np

from export.checkpoint import load_model
from export.data.images import list_images, read_image, resize_image
from export.evaluate import predict

ckpt, data, out = sys.argv[1:4]
model, _ = load_model(Path(ckpt))
model.eval()
paths = list_images(Path(data) / "train" / "good")
print(len(paths))
imgs = [resize_image(read_image(p), model.config.image_size) for p in paths[:64]]
maps, _ = predict(model, imgs)
np.save(out, maps)

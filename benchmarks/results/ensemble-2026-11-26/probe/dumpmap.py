import sys
from pathlib import Path

import numpy as np

from export.checkpoint import load_model
from export.data.images import load_test_set
from export.evaluate import predict

ckpt, data, out = sys.argv[1:4]
model, _ = load_model(Path(ckpt))
model.eval()
print(getattr(model.config, "map", None), model.config.image_size)
samples = load_test_set(Path(data), model.config.image_size)
maps, scores = predict(model, [s.image for s in samples])
np.savez_compressed(out, maps=maps, scores=scores, labels=np.array([s.is_defective for s in samples]))

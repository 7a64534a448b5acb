"""The photo check's fitted constants (lenet.ood.photo_check). Written by
`python benchmarks/fit_photo_check.py --seed 0 --products 800`: do not edit.

Fitted on 136 photo files (photoset's "fit" split) and 800 product shots
of Fashion-MNIST training images."""

import numpy as np

MEAN = np.array([
    0.0822009817, 0.0119347573, 0.0584836369, 0.697006572, 0.465918205, 0.324356748,
    0.170683743, 0.65067734, -5.00243878, -3.68088722,
])
SCALE = np.array([
    0.0993011646, 0.0197993595, 0.0703339891, 0.174085384, 0.268855709, 0.256181373,
    0.319066981, 0.211900103, 1.11658275, 1.49657562,
])
WEIGHTS = np.array([
    0.656402288, 0.435455449, -0.00360762308, 0.373561792, 0.8156118, 0.503010222, 1.88480408,
    -0.469367149, 0.304682973, 0.148834803,
])
BIAS = -3.28232378

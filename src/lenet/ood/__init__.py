"""Out-of-distribution: what a trained LeNet does with inputs unlike its training data.

- `detectors`: msp, energy, mahalanobis, knn, pixels, combined (scores, higher =
  more familiar);
- `features`: the penultimate features they read, for batches and single images;
- `calibration`: fitting them on training images and setting thresholds on
  held-out ones; `fitted`: the fitted set, saved beside the checkpoint;
- `probes` and `benchmark`: offline OOD sets, AUROC and FPR@95TPR;
- `exercise`: the chapter's exercise (`lenet ood RUN`): confidence and
  activations on test images, noise, blanks and photos.
"""

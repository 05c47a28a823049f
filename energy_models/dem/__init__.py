"""The two-layer deep energy model log p~(x) = -||x||^2 / (2 sigma^2) + b^T x + sum_k S(w_k^T s(V x) + c_k).

The energy (`energy.DEMEnergy`), its block Gibbs sampler (`gibbs`), the model with whitening, sampling and
filters (`model.DeepEnergyModel`) and its trainers, siblings that differ in `train_step`: contrastive
divergence (`contrastive_divergence`), NCE (`nce`) and exact or denoising score matching
(`score_matching`). `export` writes the SavedModel.
"""

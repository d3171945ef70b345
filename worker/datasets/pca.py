"""PCA preprocessing (`data.pca: k`): project inputs on their top-k principal components.

Fit on the training split only (mean and components), then applied to both splits, so nothing
about the validation rows leaks into the features. scikit-learn's PCA with the exact (LAPACK)
SVD solver: deterministic, and its sign convention (svd_flip) makes the components reproducible.
"""

import torch
from sklearn.decomposition import PCA


def fit_pca(
    x_train: torch.Tensor, x_val: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both splits projected on k components fit on `x_train`; the explained variance ratio."""
    rows = len(x_train)
    features = x_train[0].numel() if rows else 0
    if k > min(rows, features):
        raise ValueError(
            f"data.pca = {k} exceeds min(training rows, input features) = min({rows}, {features})"
        )
    pca = PCA(n_components=k, svd_solver="full")
    train = pca.fit_transform(x_train.reshape(rows, -1).double().numpy())
    val = pca.transform(x_val.reshape(len(x_val), -1).double().numpy()) if len(x_val) else None
    projected_val = torch.from_numpy(val).float() if val is not None else torch.zeros(0, k)
    return (
        torch.from_numpy(train).float(),
        projected_val,
        float(pca.explained_variance_ratio_.sum()),
    )

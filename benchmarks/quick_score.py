"""Does a cheap proxy rank representations like the full SVC grid (METHODS §5.18)?

Representations = PCA-k of log counts (k = 2..50) and PCA-50 plus Gaussian noise; 80/20 stratified split;
"full" = fit_svc (16-setting grid, 5-fold CV, MCC) on the 80%, MCC on the 20%; proxies scored the same way.
    .venv/bin/python benchmarks/quick_score.py ../shared/data/mouse_immune_actinn_1k.h5ad [N_CELLS]
"""
import sys, time, warnings
import numpy as np, anndata as ad
from scipy.stats import spearmanr, kendalltau
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.metrics import matthews_corrcoef
from gsrcl.svm import fit_svc

warnings.simplefilter("ignore")
path = sys.argv[1]
a = ad.read_h5ad(path)
if len(sys.argv) > 2:
    a = a[np.random.default_rng(0).choice(a.n_obs, int(sys.argv[2]), replace=False)].copy()
X = a.X.copy(); X.data = np.log1p(X.data)
y = a.obs.cell_type.astype(str).to_numpy()
Z50 = PCA(50, random_state=0).fit_transform(X.toarray())
rng = np.random.default_rng(1)
reps = {f"pca{k}": Z50[:, :k] for k in (2, 3, 5, 10, 20, 50)}
sd = Z50.std()
for s in (0.5, 1, 2, 4):
    reps[f"pca50+noise{s}"] = Z50 + rng.normal(0, s * sd, Z50.shape)
itr, iva = train_test_split(np.arange(len(y)), train_size=0.8, stratify=y, random_state=0)
proxies = {
    "svc_C10_scale": lambda: SVC(C=10, gamma="scale"),
    "svc_C1_scale": lambda: SVC(C=1, gamma="scale"),
    "knn15": lambda: KNeighborsClassifier(15),
    "logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
}
rows = {}
times = {k: 0.0 for k in ["full", *proxies]}
for name, Z in reps.items():
    t = time.perf_counter(); m = fit_svc(Z[itr], y[itr], seed=0)
    full = matthews_corrcoef(y[iva], m.predict(Z[iva])); times["full"] += time.perf_counter() - t
    r = {"full": full, "best": m.best_params_}
    for p, mk in proxies.items():
        t = time.perf_counter(); est = mk().fit(Z[itr], y[itr])
        r[p] = matthews_corrcoef(y[iva], est.predict(Z[iva])); times[p] += time.perf_counter() - t
    rows[name] = r
    print(f"{name:16s} full {full:.4f} {r['best']}  " + "  ".join(f"{p} {r[p]:.4f}" for p in proxies), flush=True)
full = [rows[n]["full"] for n in reps]
print(f"\n{path}: {len(y)} cells, {len(set(y))} types; time for all {len(reps)} representations:")
for p in ["full", *proxies]:
    v = [rows[n][p] for n in reps]
    extra = "" if p == "full" else (f" spearman {spearmanr(full, v)[0]:.3f} kendall {kendalltau(full, v)[0]:.3f}"
                                    f" picks {list(reps)[int(np.argmax(v))]} (full picks {list(reps)[int(np.argmax(full))]},"
                                    f" full MCC of proxy's pick {full[int(np.argmax(v))]:.4f} vs best {max(full):.4f})")
    print(f"  {p:14s} {times[p]:7.2f} s{extra}")

"""The host-side part of the cuSPARSE baseline: the block-diagonal CSR of all positions."""

from __future__ import annotations

import numpy as np
import pytest

from cutlass_wsp.gpu.baselines import block_diagonal_csr

sparse = pytest.importorskip("scipy.sparse")


def test_block_diagonal_csr_matches_scipy():
    rng = np.random.default_rng(0)
    L, M, K = 5, 6, 7
    mats = [sparse.random(M, K, density=d, format="csr", random_state=rng) for d in (0.3, 0.0, 0.5, 1.0, 0.1)]
    indptr, indices, data = block_diagonal_csr([(m.indptr, m.indices, m.data) for m in mats], K)
    got = sparse.csr_matrix((data, indices, indptr), shape=(L * M, L * K)).toarray()
    want = sparse.block_diag(mats).toarray()
    assert np.array_equal(got, want)
    assert indptr[0] == 0 and indptr[-1] == len(indices) == sum(m.nnz for m in mats)

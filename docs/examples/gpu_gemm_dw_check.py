import dataclasses, torch
from kernels import reference
from kernels.autograd import sparse_sae_loss
from kernels.dispatch import get_backend
torch.manual_seed(0)
dev = torch.device("cuda")
d_in, d_sae, k, B = 768, 24576, 32, 4096
W_dec = torch.randn(d_sae, d_in, device=dev); W_dec /= W_dec.norm(dim=-1, keepdim=True)
params = [W_dec.T.clone().contiguous(), torch.zeros(d_sae, device=dev), W_dec, torch.randn(d_in, device=dev) * 0.1]
x = torch.randn(B, d_in, device=dev)
dead = torch.rand(d_sae, device=dev) < 0.05
tri = get_backend(dev)
gemm = dataclasses.replace(tri, sparse_t_dense_and_sums=reference.sparse_t_dense_and_sums_gemm)
grads = {}
for name, be in (("kernel", tri), ("gemm", gemm)):
    ps = [p.clone().requires_grad_(True) for p in params]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = sparse_sae_loss(x, *ps, k, dead_mask=dead, k_aux=384, aux_coefficient=1 / 32, backend=be, n_dead=int(dead.sum()))
    loss.total.backward()
    grads[name] = [p.grad.float() for p in ps]
for n, a, b in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads["kernel"], grads["gemm"]):
    rel = ((a - b).norm() / a.norm()).item()
    print(f"GEMM-dW vs kernel-dW grad {n}: relative L2 difference {rel:.2e}")

import time, torch
from saes import SAE, SAEConfig, TrainConfig, Trainer
torch.manual_seed(0)
dev = "cuda"
feats = torch.randn(4096, 768, device=dev); feats /= feats.norm(dim=-1, keepdim=True)
def data(skip=0):
    g = torch.Generator(device=dev).manual_seed(1)
    while True:
        on = (torch.rand(4096, 4096, device=dev, generator=g) < 0.004).float()
        yield (on * torch.rand(4096, 4096, device=dev, generator=g) * 3) @ feats
for path in ("on", "off"):
    cfg = TrainConfig(total_steps=200, batch_size=4096, lr=5e-4, log_every=50, sparse_path=path, init_batches=2)
    t = Trainer(cfg, SAE(SAEConfig(d_in=768, d_sae=24576, k=32), seed=0), data, progress=False, device=dev)
    print(path, t.path_reason)
    t0 = time.time(); m = {}
    t.fit(); torch.cuda.synchronize()
    x = next(data()); 
    with torch.no_grad():
        out = t.sae(x); ev = 1 - (x - out.recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    print(f"sparse_path={path}: 200 steps in {time.time()-t0:.1f} s (incl. data gen), EV {ev.item():.3f}, L0 {(out.acts!=0).sum(-1).float().mean().item():.1f}")

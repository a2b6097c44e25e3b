"""Write the 262k-token layer-15 store that docs/examples/sae_l15_long.json trains on.

    python docs/examples/write_store_l15.py            # resumable: rerun after an interruption
"""

from interp import ActivationStore, load_model, shakespeare

model = load_model("smollm2-135m")
store = ActivationStore.write("runs/store_l15_262k", model, "blocks.15.hook_resid_post", shakespeare(),
                              max_tokens=262_144, context_size=128, forward_max_tokens=1024)
print(store)

"""The pure core: state layout, prng, optimisers, losses, work accounting, significance, gate, controller, the
selection contract, sampling and the step. Nothing here imports anything above it."""

"""One-off development experiments (``python -m experiments.<name>``): the tuning runs on the development cohort that
fixed the simulator's profiles (docs/results/simulation/dev_sweep.md). They use the product and the simulator; no
package of the product or the simulator imports them."""

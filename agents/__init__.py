"""The learners: recurrent PPO and neuroevolution, installed as ``fwp_rl.agents``."""

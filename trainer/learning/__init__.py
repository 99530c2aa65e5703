"""The learner side of PPO: the pre-allocated buffer, the loss and the learner."""

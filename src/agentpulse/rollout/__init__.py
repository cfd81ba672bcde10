"""The shared-files rollout: which agent needs its group's merged.mg, and pushing it (reference 15.3)."""

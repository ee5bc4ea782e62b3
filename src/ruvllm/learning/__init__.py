"""Online learning for the router: reservoir replay, online EWC, curriculum, the learner loop."""

from ruvllm.learning.curriculum import Curriculum, competence, difficulty
from ruvllm.learning.ewc import EWC, EWCConfig, diag_fisher
from ruvllm.learning.learner import (
    BackgroundWorker,
    CheckpointPlugin,
    CurriculumPlugin,
    EWCPlugin,
    Experience,
    LearnerConfig,
    OnlineLearner,
    Plugin,
    ReplayPlugin,
    background_learner,
    router_loss,
    router_predict,
)
from ruvllm.learning.replay import ReservoirBuffer

__all__ = [
    "EWC", "BackgroundWorker", "CheckpointPlugin", "Curriculum", "CurriculumPlugin", "EWCConfig", "EWCPlugin",
    "Experience", "LearnerConfig", "OnlineLearner", "Plugin", "ReplayPlugin", "ReservoirBuffer",
    "background_learner", "competence", "diag_fisher", "difficulty", "router_loss", "router_predict",
]

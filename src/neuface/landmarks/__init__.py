"""2D facial landmarks (68 points, iBUG order) of one tracked face per frame: FAN or dlib backends; shots."""

from neuface.landmarks.assets import fan_available, find_dlib_predictor, missing_fan_files
from neuface.landmarks.backends import BACKENDS, DlibBackend, FanBackend, LandmarkBackend, make_backend
from neuface.landmarks.extract import detect_sequence, landmarks_for_view, landmarks_info, read_landmarks
from neuface.landmarks.shots import ShotSettings, read_shots
from neuface.landmarks.tracking import FaceTracker, box_iou, track_faces

__all__ = [
    "BACKENDS",
    "DlibBackend",
    "FaceTracker",
    "FanBackend",
    "LandmarkBackend",
    "ShotSettings",
    "box_iou",
    "detect_sequence",
    "fan_available",
    "find_dlib_predictor",
    "landmarks_for_view",
    "landmarks_info",
    "make_backend",
    "missing_fan_files",
    "read_landmarks",
    "read_shots",
    "track_faces",
]

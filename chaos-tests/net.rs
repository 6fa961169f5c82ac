//! Scenario 7: network faults between vigil and the camera (packet loss, a 2 s delay, a partition).

"""The parking-tower PLC's Modbus register map, shared by the lift unit and the tower simulator.

Each lift owns a block of 20 registers starting at ``100 × lift`` (lift 0 at 0, lift 1 at 100, …), in the
holding registers (commands, written by the gateway) and the input registers (status, read by the gateway).
"""

from __future__ import annotations

BLOCK = 100
SIZE = 20

# holding registers (gateway → PLC), offsets within a lift's block
HR_COMMAND = 0  # one of CMD_*
HR_FLOOR = 1  # target floor
HR_BAY = 2  # target bay on that floor (1-based)
HR_SEQ = 3  # the gateway bumps this to issue the command in HR_COMMAND..HR_BAY

CMD_NONE = 0
CMD_STORE = 1  # take the car from the entrance bay to (floor, bay)
CMD_RETRIEVE = 2  # bring the car at (floor, bay) to the exit bay
CMD_MOVE = 3  # move the empty lift to a floor (pre-positioning)
CMD_RESET = 4  # acknowledge a fault or e-stop once the interlocks are closed; the paused job resumes
CMD_STOP = 5  # controlled stop (the gateway lost confidence, e.g. its own watchdog)

# input registers (PLC → gateway)
IR_STATE = 0  # one of STATE_*
IR_FLOOR = 1
IR_POSITION_CM = 2  # car position above ground, cm
IR_ACCEPTED_SEQ = 3  # last HR_SEQ the PLC took (or refused: see IR_RESULT)
IR_DONE_SEQ = 4  # last HR_SEQ whose job finished
IR_FAULT = 5  # one of FAULT_*
IR_INTERLOCKS = 6  # bit set = that interlock is closed (safe), see INTERLOCKS
IR_VEHICLE = 7  # 1 = a vehicle stands in the entrance bay
IR_VEHICLE_LEN_CM = 8
IR_VEHICLE_HEIGHT_CM = 9
IR_HEARTBEAT = 10  # counts up every 100 ms while the PLC runs
IR_ETA_DS = 11  # remaining time of the current job, tenths of a second
IR_RESULT = 12  # of the last command: one of RESULT_*

STATES = ("idle", "moving", "handing_over", "fault", "estop", "maintenance")
STATE_IDLE, STATE_MOVING, STATE_HANDING_OVER, STATE_FAULT, STATE_ESTOP, STATE_MAINTENANCE = range(6)

FAULTS = (
    "none",
    "door_open",
    "oversize",
    "person_detected",
    "overtravel",
    "motor_fault",
    "estop",
    "bay_occupied",
    "gateway_lost",  # the PLC stopped itself: no word from the gateway for its watchdog time
)
GATEWAY_WATCHDOG_S = 3.0  # wall-clock seconds of gateway silence after which the PLC stops motion
INTERLOCKS = ("door_closed", "no_person", "size_ok", "no_overtravel", "motor_ok", "estop_released")
ALL_CLOSED = (1 << len(INTERLOCKS)) - 1

RESULT_OK, RESULT_REFUSED, RESULT_ABORTED = 0, 1, 2


def base(lift: int) -> int:
    return BLOCK * lift

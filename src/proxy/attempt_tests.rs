use super::*;

fn facts(tries: u32, attempts: u32, replayable: bool) -> Facts {
    Facts {
        attempts,
        tries,
        replayable,
    }
}

#[test]
fn failures_before_an_answer_are_retried_while_tries_are_left() {
    for end in [
        End::ConnectFailed,
        End::Failed,
        End::Answered(502),
        End::Answered(503),
    ] {
        assert_eq!(decide(end, &facts(1, 3, true)), Next::Retry, "{end:?}");
        assert_eq!(
            decide(end, &facts(3, 3, true)),
            Next::Stop,
            "{end:?}: tries used up"
        );
        assert_eq!(
            decide(end, &facts(1, 3, false)),
            Next::Stop,
            "{end:?}: not replayable"
        );
        assert_eq!(
            decide(end, &facts(1, 1, true)),
            Next::Stop,
            "{end:?}: no policy"
        );
    }
}

#[test]
fn answers_and_abandoned_tries_stop() {
    for end in [
        End::Answered(200),
        End::Answered(500),
        End::Answered(404),
        End::Abandoned,
    ] {
        assert_eq!(decide(end, &facts(1, 5, true)), Next::Stop, "{end:?}");
    }
}

#[test]
fn stale_connections_are_replaced_only_when_replayable() {
    assert_eq!(decide(End::Stale, &facts(1, 1, true)), Next::Replace);
    assert_eq!(
        decide(End::Stale, &facts(3, 3, true)),
        Next::Replace,
        "not a new try"
    );
    assert_eq!(decide(End::Stale, &facts(1, 3, false)), Next::Stop);
}

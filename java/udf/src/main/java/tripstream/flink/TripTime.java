package tripstream.flink;

import java.time.LocalDateTime;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code TRIP_TIME(payload, earliest_ms, max_future_ms [, 'dropoff_at'])}: the event time for the
 * source's watermark.
 *
 * <p>A good trip's pickup time (or, asked for, its dropoff when usable: see
 * {@code TripPayload.MAX_TRIP_MS}); for a bad record, or a trip without a usable dropoff,
 * 1970-01-01: never null (a null rowtime fails the job) and never ahead of anything, so an absurd
 * timestamp cannot drag the watermark forward. Jobs leave such trips out as not applicable.
 */
public class TripTime extends ScalarFunction {
    public @DataTypeHint("TIMESTAMP(3)") LocalDateTime eval(byte[] payload, Long earliestMs, Long maxFutureMs) {
        return TripPayload.of(payload, earliestMs, maxFutureMs).eventTime;
    }

    public @DataTypeHint("TIMESTAMP(3)") LocalDateTime eval(byte[] payload, Long earliestMs, Long maxFutureMs,
                                                            String field) {
        TripPayload trip = TripPayload.of(payload, earliestMs, maxFutureMs);
        return "dropoff_at".equals(field) ? trip.dropoffTime : trip.eventTime;
    }

    /** With the payload's format and the schema registry's settings (see {@link ParseTrip}). */
    public @DataTypeHint("TIMESTAMP(3)") LocalDateTime eval(byte[] payload, Long earliestMs, Long maxFutureMs,
                                                            String field, String format, String registry) {
        TripPayload trip = TripPayload.of(payload, earliestMs, maxFutureMs, format, registry);
        return "dropoff_at".equals(field) ? trip.dropoffTime : trip.eventTime;
    }

    /** Non-deterministic for the same reason as {@link ParseTrip#isDeterministic()}: evaluated once per record. */
    @Override
    public boolean isDeterministic() {
        return false;
    }
}

package tripstream.flink;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * {@code PARSE_TRIP(payload, earliest_ms, max_future_ms)}: the trip's typed fields, or (with every
 * field null) the reason the payload is bad and its text. Bounds are epoch milliseconds of the
 * wall-clock pickup read as UTC; the future bound is relative to the moment the record is read.
 */
public class ParseTrip extends ScalarFunction {
    public @DataTypeHint(TripPayload.ROW_TYPE) Row eval(byte[] payload, Long earliestMs, Long maxFutureMs) {
        return TripPayload.of(payload, earliestMs, maxFutureMs).row;
    }

    /** {@code PARSE_TRIP(payload, earliest_ms, max_future_ms, format, registry)}: format {@code json} or
     * {@code avro} (Confluent wire format; {@code registry} is the schema registry's settings as JSON). */
    public @DataTypeHint(TripPayload.ROW_TYPE) Row eval(byte[] payload, Long earliestMs, Long maxFutureMs,
                                                        String format, String registry) {
        return TripPayload.of(payload, earliestMs, maxFutureMs, format, registry).row;
    }

    /**
     * Declared non-deterministic so that it runs once per record. It is deterministic for a given
     * payload except for the future bound, which reads the clock. But Flink 2.2's generated code
     * has no common-subexpression reuse: the optimizer merges the view that projects PARSE_TRIP's
     * row once into every reference ({@code parsed.fare_amount}, {@code parsed.tip_amount}, ...),
     * and the tumbling job's plan called it 24 times per record. A non-deterministic call
     * referenced more than once is not merged, so the row is computed once per branch.
     */
    @Override
    public boolean isDeterministic() {
        return false;
    }
}

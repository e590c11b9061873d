package tripstream.flink;

import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.functions.ChangelogFunction;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;

/**
 * {@code SESSIONS(input => TABLE t PARTITION BY key..., gap_ms => n)}: session windows that are
 * updated, never dropped.
 *
 * <p>Flink's session window operator finalises a session when the job's watermark passes its end
 * and then drops any trip for it. The watermark is the minimum over the partitions that are not
 * idle, so which trips it drops depends on timing. tripstream decides lateness itself, per Kafka
 * partition (see jobs/windows.py), and every trip that reaches this function is on time: it must
 * be counted. So a session here is state that stays until its retention (the pipeline's state TTL,
 * per entry, in processing time) and every change is emitted: a trip starts a session (insert),
 * extends one (update) or joins two (an update, and a delete of the absorbed one).
 *
 * <p>Sessions are Flink's: a trip at t opens the window [t, t + gap), and windows that overlap or
 * touch are one session, so a trip exactly {@code gap} after the last one continues it. The input
 * names its event time {@code event_at} (a pickup or a dropoff, as a plain TIMESTAMP(3)). Rows are
 * (session_start, session_end = last trip + gap, trips), after the PARTITION BY columns.
 */
@DataTypeHint("ROW<session_start TIMESTAMP(3), session_end TIMESTAMP(3), trips BIGINT>")
public class Sessions extends ProcessTableFunction<Row> implements ChangelogFunction {

    /** One open session of a key: its first and last trip (epoch ms) and how many trips. */
    public static class Session {
        public long first;
        public long last;
        public long trips;
    }

    public void eval(
            @StateHint MapView<Long, Session> sessions,
            @ArgumentHint(value = ArgumentTrait.SET_SEMANTIC_TABLE, name = "input") Row trip,
            @ArgumentHint(value = ArgumentTrait.SCALAR, name = "gap_ms") Long gapMs)
            throws Exception {
        LocalDateTime eventAt = trip.getFieldAs("event_at");
        long gap = gapMs;
        long at = eventAt.toInstant(ZoneOffset.UTC).toEpochMilli();
        Session joined = new Session();
        joined.first = at;
        joined.last = at;
        joined.trips = 1;
        // Sessions of one key never touch each other, so a trip joins at most the one before it
        // and the one after it; both merge into one.
        List<Session> absorbed = new ArrayList<>();
        for (Map.Entry<Long, Session> entry : sessions.entries()) {
            Session s = entry.getValue();
            if (s.first - gap <= at && at <= s.last + gap) {
                absorbed.add(s);
            }
        }
        for (Session s : absorbed) {
            joined.first = Math.min(joined.first, s.first);
            joined.last = Math.max(joined.last, s.last);
            joined.trips += s.trips;
        }
        boolean updated = false;
        for (Session s : absorbed) {
            if (s.first == joined.first) {
                collect(row(RowKind.UPDATE_BEFORE, s, gap));
                updated = true;
            } else {
                sessions.remove(s.first);
                collect(row(RowKind.DELETE, s, gap));
            }
        }
        sessions.put(joined.first, joined);
        collect(row(updated ? RowKind.UPDATE_AFTER : RowKind.INSERT, joined, gap));
    }

    private static Row row(RowKind kind, Session s, long gap) {
        return Row.ofKind(kind, time(s.first), time(s.last + gap), s.trips);
    }

    private static LocalDateTime time(long epochMs) {
        return LocalDateTime.ofEpochSecond(Math.floorDiv(epochMs, 1000L),
                (int) Math.floorMod(epochMs, 1000L) * 1_000_000, ZoneOffset.UTC);
    }

    /** A full changelog: a sink keyed by (key..., session_start) is not keyed like the PTF's
     * partitions, so the planner asks for the rows before their updates and whole deleted rows. */
    @Override
    public ChangelogMode getChangelogMode(ChangelogContext context) {
        return ChangelogMode.all();
    }
}

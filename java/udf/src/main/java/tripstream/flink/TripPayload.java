package tripstream.flink;

import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.Arrays;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.types.Row;

/**
 * One Kafka payload, decoded and checked once: the typed trip fields, or the reason it is bad.
 *
 * <p>Flink's JSON format either fails the job on a bad record or drops it without a trace; we want
 * the record kept, with its reason, in bad_records. Parsing in SQL with JSON_VALUE would decode the
 * document once per field (eight times slower on the bundled month), so the checks live here.
 *
 * <p>The rules are mirrored by {@code tripstream.verify.payloads} in Python, which classifies the
 * same bytes for the batch truth; a change here must be made there too (the tests compare both).
 * Checks run field by field in schema order and the first problem is the reason.
 */
final class TripPayload {
    static final String[] FIELDS = {
        "event_id", "taxi_type", "vendor_id", "pickup_at", "dropoff_at", "pu_location_id",
        "do_location_id", "passenger_count", "trip_distance", "ratecode_id", "store_and_fwd_flag",
        "payment_type", "trip_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
        "improvement_surcharge", "congestion_surcharge", "total_amount"
    };
    /** s = text, i = integer, f = number, t = timestamp; upper case = required. */
    static final String KINDS = "SSiTtIiifisiiffffffff";

    /** The row type of {@link ParseTrip}: the fields, then the reason and the raw text (bad only). */
    static final String ROW_TYPE =
        "ROW<event_id STRING, taxi_type STRING, vendor_id INT, pickup_at TIMESTAMP(3), "
            + "dropoff_at TIMESTAMP(3), pu_location_id INT, do_location_id INT, passenger_count INT, "
            + "trip_distance DOUBLE, ratecode_id INT, store_and_fwd_flag STRING, payment_type INT, "
            + "trip_type INT, fare_amount DOUBLE, extra DOUBLE, mta_tax DOUBLE, tip_amount DOUBLE, "
            + "tolls_amount DOUBLE, improvement_surcharge DOUBLE, congestion_surcharge DOUBLE, "
            + "total_amount DOUBLE, reason STRING, bad_payload STRING>";

    /** The event time given to a bad record: far behind any watermark, so it never moves one. */
    static final LocalDateTime NO_TIME = LocalDateTime.of(1970, 1, 1, 0, 0);

    static final int RAW_LIMIT = 4096;

    /**
     * The longest trip whose dropoff can serve as event time: a dropoff before the pickup, or more
     * than a day after it, is a recording error and would drag a dropoff-time watermark along.
     * Mirrored by {@code tripstream.jobs.declaration.MAX_TRIP_MS}.
     */
    static final long MAX_TRIP_MS = 86_400_000L;

    /**
     * The longest text field, in characters (code points). PostgreSQL's btree index refuses a key
     * over about 2.7 kB: a longer event_id would fail the sink on every retry, forever.
     */
    static final int TEXT_LIMIT = 128;

    private static final ObjectMapper MAPPER =
        new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    private static final Pattern TIMESTAMP =
        Pattern.compile("(\\d{4})-(\\d{2})-(\\d{2})[ T](\\d{2}):(\\d{2}):(\\d{2})(?:\\.(\\d{1,9}))?");

    /** The planner may call both functions, several times, on one record: decode it once. */
    private static final ThreadLocal<TripPayload> LAST = new ThreadLocal<>();

    private final byte[] payload;
    private final long earliestMs;
    private final long maxFutureMs;
    /** The schema registry's settings (JSON) for Confluent Avro payloads; null for JSON ones. */
    private final String registry;
    final Row row;
    final LocalDateTime eventTime;
    /** The dropoff when it is a usable event time (see {@link #MAX_TRIP_MS}), else {@link #NO_TIME}. */
    final LocalDateTime dropoffTime;

    private TripPayload(byte[] payload, long earliestMs, long maxFutureMs, String registry) {
        // A copy: the memo must not see a buffer its caller later reuses for another record.
        this.payload = payload == null ? null : payload.clone();
        this.earliestMs = earliestMs;
        this.maxFutureMs = maxFutureMs;
        this.registry = registry;
        Object[] values = new Object[FIELDS.length + 2];
        String reason = registry == null ? check(payload, values, earliestMs, maxFutureMs)
            : checkAvro(ConfluentAvro.forSettings(registry), payload, values, earliestMs, maxFutureMs);
        if (reason != null) {
            Arrays.fill(values, null);
            values[FIELDS.length] = reason;
            values[FIELDS.length + 1] = rawText(payload);
            eventTime = NO_TIME;
            dropoffTime = NO_TIME;
        } else {
            eventTime = (LocalDateTime) values[3];
            dropoffTime = usableDropoff(eventTime, (LocalDateTime) values[4]);
        }
        row = Row.of(values);
    }

    static TripPayload of(byte[] payload, long earliestMs, long maxFutureMs) {
        return of(payload, earliestMs, maxFutureMs, "json", null);
    }

    /**
     * A payload of the given format: {@code json}, or {@code avro} (the Confluent wire format,
     * writer schemas from the registry whose settings {@code registry} holds as JSON).
     */
    static TripPayload of(byte[] payload, long earliestMs, long maxFutureMs, String format, String registry) {
        String avro;
        if ("avro".equals(format)) {
            avro = registry;
        } else if ("json".equals(format)) {
            avro = null;
        } else {
            throw new IllegalArgumentException("tripstream: unknown payload format " + format);
        }
        TripPayload last = LAST.get();
        if (last != null && last.earliestMs == earliestMs && last.maxFutureMs == maxFutureMs
                && java.util.Objects.equals(last.registry, avro) && Arrays.equals(last.payload, payload)) {
            return last;
        }
        TripPayload parsed = new TripPayload(payload, earliestMs, maxFutureMs, avro);
        LAST.set(parsed);
        return parsed;
    }

    /** Fill {@code values} from the payload; return why it is bad, or null when it is a trip. */
    static String check(byte[] payload, Object[] values, long earliestMs, long maxFutureMs) {
        if (payload == null || payload.length == 0) {
            return "empty payload";
        }
        JsonNode doc;
        try {
            doc = MAPPER.readTree(payload);
        } catch (Exception e) {
            return "not JSON";
        }
        if (doc == null || !doc.isObject()) {
            return "not a JSON object";
        }
        for (int i = 0; i < FIELDS.length; i++) {
            String name = FIELDS[i];
            char kind = KINDS.charAt(i);
            JsonNode node = doc.get(name);
            boolean required = Character.isUpperCase(kind);
            if (node == null || node.isNull() || (required && node.isTextual() && node.textValue().isEmpty())) {
                if (required) {
                    return "missing " + name;
                }
                continue;
            }
            switch (Character.toLowerCase(kind)) {
                case 's':
                    if (!node.isTextual()) {
                        return name + ": expected text";
                    }
                    String textProblem = textProblem(name, node.textValue());
                    if (textProblem != null) {
                        return textProblem;
                    }
                    values[i] = node.textValue();
                    break;
                case 'i':
                    Integer whole = toInt(node);
                    if (whole == null) {
                        return name + ": expected integer";
                    }
                    values[i] = whole;
                    break;
                case 'f':
                    if (!node.isNumber()) {
                        return name + ": expected number";
                    }
                    double number = node.doubleValue();
                    if (!Double.isFinite(number)) {
                        return name + ": not finite";
                    }
                    values[i] = number;
                    break;
                default:
                    LocalDateTime time = node.isTextual() ? toTimestamp(node.textValue()) : null;
                    if (time == null) {
                        return name + ": expected timestamp YYYY-MM-DD HH:MM:SS";
                    }
                    values[i] = time;
            }
        }
        return pickupProblem(values, earliestMs, maxFutureMs);
    }

    /** The earliest and latest TIMESTAMP(3) Flink holds: years 0001 to 9999. */
    static final long MIN_TIME_MS = -62_135_596_800_000L;
    static final long MAX_TIME_MS = 253_402_300_799_999L;

    /**
     * {@link #check} for a Confluent Avro payload: decoded with its writer schema (see
     * {@link ConfluentAvro}), then the same field rules in the same order. Avro's types leave fewer
     * ways to be wrong (a zone id is an int), but null and empty required fields, NUL, overlong
     * text, non-finite numbers and timestamps outside years 1..9999 are still possible.
     */
    static String checkAvro(ConfluentAvro avro, byte[] payload, Object[] values, long earliestMs, long maxFutureMs) {
        if (payload == null || payload.length == 0) {
            return "empty payload";
        }
        String undecodable = avro.decode(payload, values);
        if (undecodable != null) {
            return undecodable;
        }
        for (int i = 0; i < FIELDS.length; i++) {
            String name = FIELDS[i];
            char kind = KINDS.charAt(i);
            Object value = values[i];
            boolean required = Character.isUpperCase(kind);
            if (value == null || (required && "".equals(value))) {
                if (required) {
                    return "missing " + name;
                }
                continue;
            }
            switch (Character.toLowerCase(kind)) {
                case 's':
                    String textProblem = textProblem(name, (String) value);
                    if (textProblem != null) {
                        return textProblem;
                    }
                    break;
                case 'i':
                    break;
                case 'f':
                    if (!Double.isFinite((Double) value)) {
                        return name + ": not finite";
                    }
                    break;
                default:
                    long ms = (Long) value;
                    if (ms < MIN_TIME_MS || ms > MAX_TIME_MS) {
                        return name + ": timestamp outside years 1 to 9999";
                    }
                    values[i] = LocalDateTime.ofEpochSecond(Math.floorDiv(ms, 1000L),
                        (int) Math.floorMod(ms, 1000L) * 1_000_000, ZoneOffset.UTC);
            }
        }
        return pickupProblem(values, earliestMs, maxFutureMs);
    }

    /** Why a text value is bad (a NUL, or more than {@link #TEXT_LIMIT} characters), else null. */
    private static String textProblem(String name, String text) {
        if (text.indexOf('\u0000') >= 0) {
            return name + ": contains NUL";
        }
        if (text.codePointCount(0, text.length()) > TEXT_LIMIT) {
            return name + ": longer than " + TEXT_LIMIT + " characters";
        }
        return null;
    }

    /** The pickup's bounds, the last check of either format; the future one is relative to now. */
    private static String pickupProblem(Object[] values, long earliestMs, long maxFutureMs) {
        long pickupMs = ((LocalDateTime) values[3]).toInstant(ZoneOffset.UTC).toEpochMilli();
        if (pickupMs < earliestMs) {
            return "pickup_at: too far in the past";
        }
        if (pickupMs > System.currentTimeMillis() + maxFutureMs) {
            return "pickup_at: too far in the future";
        }
        return null;
    }

    private static LocalDateTime usableDropoff(LocalDateTime pickup, LocalDateTime dropoff) {
        if (dropoff == null) {
            return NO_TIME;
        }
        long trip = dropoff.toInstant(ZoneOffset.UTC).toEpochMilli() - pickup.toInstant(ZoneOffset.UTC).toEpochMilli();
        return trip >= 0 && trip <= MAX_TRIP_MS ? dropoff : NO_TIME;
    }

    private static Integer toInt(JsonNode node) {
        if (node.isIntegralNumber()) {
            return node.canConvertToInt() ? node.intValue() : null;
        }
        if (node.isFloatingPointNumber()) {
            double d = node.doubleValue();
            if (Double.isFinite(d) && d == Math.floor(d) && d >= Integer.MIN_VALUE && d <= Integer.MAX_VALUE) {
                return (int) d;
            }
        }
        return null;
    }

    /** Wall-clock 'YYYY-MM-DD HH:MM:SS[.fff]' (or with a T), cut to milliseconds like TIMESTAMP(3). */
    static LocalDateTime toTimestamp(String text) {
        Matcher m = TIMESTAMP.matcher(text);
        if (!m.matches()) {
            return null;
        }
        String fraction = m.group(7) == null ? "" : m.group(7);
        int millis = fraction.isEmpty() ? 0 : Integer.parseInt((fraction + "00").substring(0, 3));
        try {
            return LocalDateTime.of(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)),
                Integer.parseInt(m.group(3)), Integer.parseInt(m.group(4)), Integer.parseInt(m.group(5)),
                Integer.parseInt(m.group(6)), millis * 1_000_000);
        } catch (DateTimeException e) {
            return null;
        }
    }

    /** The payload as text PostgreSQL can store: UTF-8 with replacements, no NUL, bounded length. */
    static String rawText(byte[] payload) {
        if (payload == null) {
            return null;
        }
        String text = new String(payload, StandardCharsets.UTF_8).replace('\u0000', '\uFFFD');
        return text.length() > RAW_LIMIT ? text.substring(0, RAW_LIMIT) : text;
    }
}

package tripstream.flink;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
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

    private static final JsonFactory JSON = new JsonFactory();

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
        Object[] found = new Object[FIELDS.length];
        String malformed = read(payload, found);
        if (malformed != null) {
            return malformed;
        }
        for (int i = 0; i < FIELDS.length; i++) {
            String name = FIELDS[i];
            char kind = KINDS.charAt(i);
            Object value = found[i];
            boolean required = Character.isUpperCase(kind);
            if (value == null || value == JSON_NULL || (required && "".equals(value))) {
                if (required) {
                    return "missing " + name;
                }
                continue;
            }
            switch (Character.toLowerCase(kind)) {
                case 's':
                    if (!(value instanceof String)) {
                        return name + ": expected text";
                    }
                    String textProblem = textProblem(name, (String) value);
                    if (textProblem != null) {
                        return textProblem;
                    }
                    values[i] = value;
                    break;
                case 'i':
                    Integer whole = toInt(value);
                    if (whole == null) {
                        return name + ": expected integer";
                    }
                    values[i] = whole;
                    break;
                case 'f':
                    if (!(value instanceof Number)) {
                        return name + ": expected number";
                    }
                    double number = ((Number) value).doubleValue();
                    if (!Double.isFinite(number)) {
                        return name + ": not finite";
                    }
                    values[i] = number;
                    break;
                default:
                    LocalDateTime time = value instanceof String ? toTimestamp((String) value) : null;
                    if (time == null) {
                        return name + ": expected timestamp YYYY-MM-DD HH:MM:SS";
                    }
                    values[i] = time;
            }
        }
        return pickupProblem(values, earliestMs, maxFutureMs);
    }

    /** A JSON null, told apart from a field that is absent (both are "missing" to the rules). */
    private static final Object JSON_NULL = new Object();
    /** A boolean, an object or an array: not a value any field takes. */
    private static final Object NOT_SCALAR = new Object();
    private static final Map<String, Integer> FIELD_INDEX = new HashMap<>();

    static {
        for (int i = 0; i < FIELDS.length; i++) {
            FIELD_INDEX.put(FIELDS[i], i);
        }
    }

    /**
     * Read the document in one streaming pass, keeping the value of each trip field: a String, a
     * Number (Integer, Long or BigInteger for an integer, as Jackson sizes it; Double otherwise),
     * {@link #JSON_NULL} or {@link #NOT_SCALAR}. Return why the payload is not a JSON object, or null.
     *
     * <p>It accepts what {@code ObjectMapper.readTree} with trailing tokens refused did (the reader
     * these rules were written for), on strict UTF-8 (see {@link #strictUtf8}): every token is read
     * and every string and number decoded, ignored fields included, so malformed text, bad UTF-8
     * or a number past Jackson's limits anywhere makes the payload "not JSON"; a repeated name keeps
     * its last value, as the tree did. It builds no tree: building one was half of PARSE_TRIP's time
     * and a quarter of the source task's (Flink's flame graph of the tumbling job).
     */
    private static String read(byte[] payload, Object[] found) {
        if (!strictUtf8(payload)) {
            return "not JSON";
        }
        try (JsonParser parser = JSON.createParser(payload)) {
            JsonToken first = parser.nextToken();
            if (first != JsonToken.START_OBJECT) {
                if (first != null) {
                    value(parser, first);
                }
                return parser.nextToken() == null ? "not a JSON object" : "not JSON";
            }
            JsonToken token;
            while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                Integer index = FIELD_INDEX.get(parser.currentName());
                Object value = value(parser, parser.nextToken());
                if (index != null) {
                    found[index] = value;
                }
            }
            if (token != JsonToken.END_OBJECT || parser.nextToken() != null) {
                return "not JSON";
            }
            return null;
        } catch (IOException | RuntimeException e) {
            return "not JSON";
        }
    }

    /**
     * Whether the payload is UTF-8 by the standard's strict rules (Python's decoder, which verify
     * uses, applies the same). Jackson alone is lenient in three ways this closes: it accepts
     * overlong forms and encoded surrogates; its table of field names pads a name's last four
     * bytes with 0xFF, so a name with a stray 0xFF byte ({@code "pickup_a\xfft"}) read as
     * {@code pickup_at} once that name was in the table (a verdict that depended on the records
     * read before); and a payload with a NUL byte among its first four it reads as UTF-16 or 32.
     */
    private static boolean strictUtf8(byte[] payload) {
        for (int i = 0; i < Math.min(4, payload.length); i++) {
            if (payload[i] == 0) {
                return false;
            }
        }
        for (byte b : payload) {
            if (b < 0) {  // not all ASCII: decode it strictly once
                try {
                    StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(payload));
                    return true;
                } catch (CharacterCodingException e) {
                    return false;
                }
            }
        }
        return true;
    }

    /** The value at {@code token}, a container read through to its end (its contents decoded). */
    private static Object value(JsonParser parser, JsonToken token) throws IOException {
        if (token == null) {
            throw new EOFException("document ends inside a value");
        }
        switch (token) {
            case VALUE_STRING:
                return parser.getText();
            case VALUE_NUMBER_INT:
                return parser.getNumberValue();
            case VALUE_NUMBER_FLOAT:
                return parser.getDoubleValue();
            case VALUE_NULL:
                return JSON_NULL;
            case START_OBJECT:
            case START_ARRAY:
                int depth = 1;
                while (depth > 0) {
                    JsonToken inner = parser.nextToken();
                    if (inner == null) {
                        throw new EOFException("document ends inside a container");
                    }
                    if (inner == JsonToken.START_OBJECT || inner == JsonToken.START_ARRAY) {
                        depth++;
                    } else if (inner == JsonToken.END_OBJECT || inner == JsonToken.END_ARRAY) {
                        depth--;
                    } else if (inner != JsonToken.FIELD_NAME) {
                        value(parser, inner);
                    }
                }
                return NOT_SCALAR;
            default:
                return NOT_SCALAR;
        }
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

    /** An integer field's value: an int-sized integer, or a whole double in int range; else null. */
    private static Integer toInt(Object value) {
        if (value instanceof Integer) {
            return (Integer) value;
        }
        if (value instanceof Double) {
            double d = (Double) value;
            if (Double.isFinite(d) && d == Math.floor(d) && d >= Integer.MIN_VALUE && d <= Integer.MAX_VALUE) {
                return (int) d;
            }
        }
        return null;  // a Long or BigInteger is past int range by construction; text and the rest are not numbers
    }

    /**
     * Wall-clock 'YYYY-MM-DD HH:MM:SS[.f to .fffffffff]' (or with a T), cut to milliseconds like
     * TIMESTAMP(3); null for any other text, an impossible date or year 0. Read by hand (ASCII digits
     * only), not with a regular expression: two of these per trip were a sixth of parsing.
     */
    static LocalDateTime toTimestamp(String text) {
        int n = text.length();
        if (n < 19 || n == 20 || n > 29 || text.charAt(4) != '-' || text.charAt(7) != '-'
                || (text.charAt(10) != ' ' && text.charAt(10) != 'T') || text.charAt(13) != ':'
                || text.charAt(16) != ':' || (n > 19 && text.charAt(19) != '.')) {
            return null;
        }
        int year = digits(text, 0, 4);
        int month = digits(text, 5, 7);
        int day = digits(text, 8, 10);
        int hour = digits(text, 11, 13);
        int minute = digits(text, 14, 16);
        int second = digits(text, 17, 19);
        int millis = 0;
        if (n > 19) {
            if (digits(text, 20, n) < 0) {
                return null;
            }
            for (int i = 20; i < 23; i++) {  // the first three digits, padded with zeros
                millis = millis * 10 + (i < n ? text.charAt(i) - '0' : 0);
            }
        }
        if ((year | month | day | hour | minute | second) < 0 || year == 0) {
            return null;  // year 0 too: TIMESTAMP(3) holds years 1 to 9999, as for Avro timestamps
        }
        try {
            return LocalDateTime.of(year, month, day, hour, minute, second, millis * 1_000_000);
        } catch (DateTimeException e) {
            return null;
        }
    }

    /** The ASCII digits text[from, to) as a number (at most nine of them), or -1 if any is not one. */
    private static int digits(String text, int from, int to) {
        int value = 0;
        for (int i = from; i < to; i++) {
            char c = text.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
            value = value * 10 + (c - '0');
        }
        return value;
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

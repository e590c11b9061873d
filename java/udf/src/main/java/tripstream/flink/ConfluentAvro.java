package tripstream.flink;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.util.Utf8;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Trip records in the Confluent wire format (magic byte 0, the writer schema's 4-byte registry id,
 * the Avro binary), decoded so that a record that cannot be read is a bad record, not a failed job.
 *
 * <p>Flink's {@code avro-confluent} format throws on a wrong magic byte, an unknown schema id or a
 * truncated record, which fails (and restarts, and fails again) the job. Here each of those is a
 * reason in {@code bad_records}. A registry that does not answer is different: that is not the
 * record's fault, so the lookup throws and Flink restarts the job until the registry is back.
 *
 * <p>Writer schemas are fetched once per id ({@code GET <url>/schemas/ids/<id>}) and cached for the
 * life of the TaskManager; an id the registry does not know (404) is cached as unknown. Records are
 * read with the writer's schema resolved against the reader schema, {@code trip_event.avsc}
 * (bundled in the jar from the Python package), so a record written with an evolved schema (an
 * added optional field, a removed one) reads as the same trip. The rules are mirrored by
 * {@code tripstream.verify.payloads} in Python.
 */
final class ConfluentAvro {
    /**
     * The longest string, bytes or collection a record may claim. Avro allocates what a length
     * says before it reads: a garbage record claiming a 2 GB string would take the TaskManager's
     * heap with it, every time the job restarts into it. Nothing in a Kafka record (1 MB by
     * default) can be longer; past this the record is not valid. Set before Avro's limits class
     * loads; the shaded copy reads these under its relocated names, so no other Avro is touched.
     */
    static final String LIMIT = "1048576";

    static {
        for (String kind : new String[] {"string", "bytes", "collectionItems"}) {
            System.setProperty("org.apache.avro.limits." + kind + ".maxLength", LIMIT);
        }
    }

    static final Schema READER = readerSchema();

    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Map<String, ConfluentAvro> BY_SETTINGS = new ConcurrentHashMap<>();

    /** What a schema id resolved to: a reader for it, or why its records cannot be read. */
    private static final class Writer {
        final Schema schema;
        final String problem;

        Writer(Schema schema, String problem) {
            this.schema = schema;
            this.problem = problem;
        }
    }

    private final String url;
    private final String authorization;
    private final HttpClient http;
    private final Map<Integer, Writer> writers = new ConcurrentHashMap<>();
    /** Readers are not shared between task threads. */
    private final ThreadLocal<Map<Integer, GenericDatumReader<GenericRecord>>> readers =
        ThreadLocal.withInitial(java.util.HashMap::new);
    private final ThreadLocal<BinaryDecoder> decoder = new ThreadLocal<>();

    private ConfluentAvro(String settingsJson) {
        JsonNode settings;
        try {
            settings = MAPPER.readTree(settingsJson);
        } catch (IOException e) {
            throw new IllegalArgumentException("tripstream: the schema registry settings are not JSON");
        }
        String base = text(settings, "url");
        if (base.isEmpty()) {
            throw new IllegalArgumentException("tripstream: no schema registry url for an avro job");
        }
        url = base.endsWith("/") ? base.substring(0, base.length() - 1) : base;
        String user = text(settings, "username");
        authorization = user.isEmpty() ? null : "Basic " + Base64.getEncoder().encodeToString(
            (user + ":" + text(settings, "password")).getBytes(StandardCharsets.UTF_8));
        HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10));
        String caFile = text(settings, "ca_file");
        String clientCert = text(settings, "client_cert");
        String clientKey = text(settings, "client_key");
        if (!caFile.isEmpty() || !clientCert.isEmpty()) {
            builder.sslContext(tlsContext(caFile, clientCert, clientKey));
        }
        http = builder.build();
    }

    /** The decoder for one registry (its settings as JSON: url, username, password, ca_file, client_cert, client_key). */
    static ConfluentAvro forSettings(String settingsJson) {
        return BY_SETTINGS.computeIfAbsent(settingsJson, ConfluentAvro::new);
    }

    /**
     * Decode one payload into {@code values} (reader schema order = {@link TripPayload#FIELDS}
     * order, by name); return why it cannot be read, or null. Field rules are the caller's.
     */
    String decode(byte[] payload, Object[] values) {
        if (payload[0] != 0) {
            return "not Confluent Avro (no magic byte 0)";
        }
        if (payload.length < 5) {
            return "not Confluent Avro (shorter than its 5-byte header)";
        }
        int id = ByteBuffer.wrap(payload, 1, 4).getInt();
        Writer writer = writers.computeIfAbsent(id, this::fetch);
        if (writer.problem != null) {
            return writer.problem;
        }
        GenericDatumReader<GenericRecord> reader =
            readers.get().computeIfAbsent(id, k -> new GenericDatumReader<>(writer.schema, READER));
        BinaryDecoder in = DecoderFactory.get().binaryDecoder(payload, 5, payload.length - 5, decoder.get());
        decoder.set(in);
        GenericRecord record;
        try {
            record = reader.read(null, in);
            if (!in.isEnd()) {
                return "schema id " + id + ": not a valid Avro record";
            }
        } catch (Exception e) {
            return "schema id " + id + ": not a valid Avro record";
        }
        for (int i = 0; i < TripPayload.FIELDS.length; i++) {
            Object value = record.get(TripPayload.FIELDS[i]);
            if (value instanceof Utf8) {
                String text = strictUtf8((Utf8) value);
                if (text == null) {
                    return "schema id " + id + ": not a valid Avro record";
                }
                value = text;
            } else if (value instanceof CharSequence) {
                value = value.toString();
            }
            values[i] = value;
        }
        return null;
    }

    private Writer fetch(int id) {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + id))
            .timeout(Duration.ofSeconds(10))
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if (authorization != null) {
            request.header("Authorization", authorization);
        }
        HttpResponse<String> response;
        try {
            response = http.send(request.GET().build(), HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new IllegalStateException("tripstream: schema registry at " + url + " does not answer: " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("tripstream: interrupted while asking the schema registry", e);
        }
        if (response.statusCode() == 404) {
            return new Writer(null, "unknown schema id " + id);
        }
        if (response.statusCode() != 200) {
            // Not the record's fault (a login refused, a registry in trouble): fail, and be retried.
            throw new IllegalStateException("tripstream: schema registry at " + url + " answered HTTP "
                + response.statusCode() + " for schema id " + id);
        }
        Schema schema;
        try {
            schema = new Schema.Parser().parse(MAPPER.readTree(response.body()).get("schema").asText());
        } catch (Exception e) {
            return new Writer(null, "schema id " + id + " cannot be read as TripEvent");
        }
        if (schema.getType() != Schema.Type.RECORD
                || SchemaCompatibility.checkReaderWriterCompatibility(READER, schema).getType()
                   != SchemaCompatibility.SchemaCompatibilityType.COMPATIBLE) {
            return new Writer(null, "schema id " + id + " cannot be read as TripEvent");
        }
        return new Writer(schema, null);
    }

    /** Avro's Utf8 replaces malformed UTF-8 when it becomes a String; such a record is not valid. */
    private static String strictUtf8(Utf8 value) {
        try {
            CharBuffer chars = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(value.getBytes(), 0, value.getByteLength()));
            return chars.toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /**
     * TLS to the registry: trusting the CA file's certificates (else the JVM's own CAs), and
     * presenting a client certificate when one is given (mutual TLS). The key is a PEM PKCS#8
     * file ("BEGIN PRIVATE KEY", RSA or EC), as openssl writes them; the certificate file may
     * hold its chain.
     */
    private static SSLContext tlsContext(String caFile, String certFile, String keyFile) {
        TrustManager[] trusted = null;
        KeyManager[] keys = null;
        if (!caFile.isEmpty()) {
            try (InputStream in = new FileInputStream(caFile)) {
                KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
                store.load(null, null);
                int n = 0;
                for (Certificate cert : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                    store.setCertificateEntry("ca-" + n++, cert);
                }
                TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                trust.init(store);
                trusted = trust.getTrustManagers();
            } catch (Exception e) {
                throw new IllegalStateException("tripstream: cannot read the schema registry's CA file " + caFile + ": " + e, e);
            }
        }
        if (!certFile.isEmpty()) {
            String keyPath = keyFile.isEmpty() ? certFile : keyFile;
            try (InputStream in = new FileInputStream(certFile)) {
                Certificate[] chain = CertificateFactory.getInstance("X.509").generateCertificates(in)
                    .toArray(new Certificate[0]);
                if (chain.length == 0) {
                    throw new IllegalArgumentException("no certificate in it");
                }
                PrivateKey key = pkcs8Key(Files.readString(Path.of(keyPath), StandardCharsets.US_ASCII),
                    chain[0].getPublicKey().getAlgorithm());
                char[] none = new char[0];
                KeyStore store = KeyStore.getInstance("PKCS12");
                store.load(null, null);
                store.setKeyEntry("client", key, none, chain);
                KeyManagerFactory factory = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                factory.init(store, none);
                keys = factory.getKeyManagers();
            } catch (Exception e) {
                throw new IllegalStateException("tripstream: cannot use the schema registry client certificate "
                    + certFile + " with key " + keyPath + " (on this TaskManager, as the account it runs as): " + e, e);
            }
        }
        try {
            SSLContext context = SSLContext.getInstance("TLS");
            context.init(keys, trusted, null);
            return context;
        } catch (Exception e) {
            throw new IllegalStateException("tripstream: cannot set up TLS to the schema registry: " + e, e);
        }
    }

    private static PrivateKey pkcs8Key(String pem, String algorithm) throws Exception {
        String begin = "-----BEGIN PRIVATE KEY-----";
        int from = pem.indexOf(begin);
        int to = pem.indexOf("-----END PRIVATE KEY-----");
        if (from < 0 || to < from) {
            throw new IllegalArgumentException("the key is not a PEM PKCS#8 private key (BEGIN PRIVATE KEY); "
                + "convert it with: openssl pkcs8 -topk8 -nocrypt");
        }
        byte[] der = Base64.getMimeDecoder().decode(pem.substring(from + begin.length(), to));
        return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(der));
    }

    private static String text(JsonNode node, String key) {
        JsonNode value = node.get(key);
        return value == null || value.isNull() ? "" : value.asText();
    }

    private static Schema readerSchema() {
        try (InputStream in = ConfluentAvro.class.getResourceAsStream("trip_event.avsc")) {
            return new Schema.Parser().parse(in);
        } catch (IOException | NullPointerException e) {
            throw new IllegalStateException("tripstream: trip_event.avsc is missing from the functions jar", e);
        }
    }
}

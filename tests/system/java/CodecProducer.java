// A hospital-side producer built on Apache Kafka's own Java client, as integration engines use it.
// Run as a single source file: java -cp '<kafka libs>/*' CodecProducer.java <bootstrap> <plan.tsv>
// Each line of the plan: topic <TAB> compression.type <TAB> request id <TAB> file. One producer per
// compression type; every record carries a request-id header and waits for acks=all.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class CodecProducer {
    static String bootstrap;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        List<String[]> plan = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8)) {
            if (!line.isBlank()) plan.add(line.split("\t"));
        }
        Map<String, KafkaProducer<byte[], byte[]>> producers = new HashMap<>();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        for (String[] step : plan) {
            KafkaProducer<byte[], byte[]> producer = producers.computeIfAbsent(step[1], CodecProducer::open);
            ProducerRecord<byte[], byte[]> record =
                new ProducerRecord<>(step[0], null, Files.readAllBytes(Path.of(step[3])));
            record.headers().add("request-id", step[2].getBytes(StandardCharsets.UTF_8));
            sent.add(producer.send(record));
        }
        for (Future<RecordMetadata> f : sent) f.get();
        for (KafkaProducer<byte[], byte[]> p : producers.values()) p.close();
        System.out.println("sent " + sent.size() + " records with " + producers.keySet());
    }

    static KafkaProducer<byte[], byte[]> open(String compression) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        props.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, String.valueOf(16 * 1024 * 1024));
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return new KafkaProducer<>(props);
    }
}

// What a downstream service built on Apache Kafka's own Java client sees of a topic written in
// transactions: every record of committed transactions, none of aborted ones (isolation.level=read_committed).
// Run as a single source file: java -cp '<kafka libs>/*' CommittedReader.java <bootstrap> <topic> [key]
// Reads every partition from its beginning to its last stable offset and prints one line per record:
// partition <TAB> offset <TAB> value (one line of JSON, as the consumer writes it), or the key instead
// with "key" (requests: their values are images).
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class CommittedReader {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        boolean keys = args.length > 2 && args[2].equals("key");
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo p : consumer.partitionsFor(args[1], Duration.ofSeconds(30))) {
                parts.add(new TopicPartition(p.topic(), p.partition()));
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            // Under read_committed, endOffsets is each partition's last stable offset.
            Map<TopicPartition, Long> ends = consumer.endOffsets(parts, Duration.ofSeconds(30));
            long deadline = System.currentTimeMillis() + 60_000;
            while (!reachedEnds(consumer, ends)) {
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("gave up before the end offsets " + ends);
                    System.exit(3);
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    byte[] shown = keys ? r.key() : r.value();
                    System.out.println(r.partition() + "\t" + r.offset() + "\t"
                                       + (shown == null ? "" : new String(shown, StandardCharsets.UTF_8)));
                }
            }
        }
    }

    static boolean reachedEnds(KafkaConsumer<byte[], byte[]> consumer, Map<TopicPartition, Long> ends) {
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
            if (consumer.position(e.getKey()) < e.getValue()) return false;
        }
        return true;
    }
}
